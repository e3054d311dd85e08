"""Clean, label, split and tokenize a text-classification data set; cache the prepared splits under data/."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, disable_progress_bars, load_from_disk

from .config import Config, Paths
from .errors import ConfigError, DataError, listed
from .io import replace_dir_atomic, restore_backup, write_json_atomic
from .modeling import load_tokenizer
from .sources import load_frame

disable_progress_bars()  # map/save bars of a few seconds each only clutter the notebooks

SPLITS = ("train", "validation", "test")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # a label written as a number ("nan" is a name)


def clean(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Drop missing and empty texts and labels, normalise whitespace and <br> tags, de-duplicate texts; drop texts with
    two labels (neither is trusted) and training texts in the source's own held-out splits (kept as published)."""
    report = {"rows": len(frame)}
    label = frame["label"].map(lambda v: (v.strip() or None) if isinstance(v, str) else v)  # " positive" = "positive"
    frame = frame.assign(label=label).dropna(subset=["text", "label"])
    report["missing"] = report["rows"] - len(frame)
    text = frame["text"].astype(str).map(lambda t: re.sub(r"\s+", " ", re.sub(r"<br\s*/?>", " ", t)).strip())
    frame = frame.assign(text=text)[text != ""]
    report["empty"] = report["rows"] - report["missing"] - len(frame)
    held = frame["split"] != "train" if "split" in frame else pd.Series(False, index=frame.index)
    train = frame[~held]
    distinct, rows = train["label"].nunique(), len(train)  # for a message, should cleaning leave nothing
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
    if frame.empty and report["conflicting_labels"] and distinct > rows / 2:
        raise DataError(f"the label column looks like text: it holds {distinct} distinct values in {rows} rows, "
                        "and every text occurs with more than one of them: set label_column to the column of "
                        "classes and text_column to the column of texts (are they swapped?)")
    if frame.empty:
        raise DataError("no usable examples are left after cleaning (all texts or labels are empty or missing): "
                        "check text_column and label_column")
    names = pd.Series([v for v in frame["label"].unique() if isinstance(v, str)], dtype=object)
    variants = [sorted(group) for _, group in names.groupby(names.str.lower(), sort=False) if len(group) > 1]
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
        _check_label_kinds(values)
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


def _check_label_kinds(values: pd.Series) -> None:
    """Labels are all class ids or all class names: a 0 beside "negative" would silently be a class of its own."""
    unique = list(values.unique())
    numbers = [v for v in unique if isinstance(v, (int, float, np.number)) or NUMBER.fullmatch(str(v))]
    names = [v for v in unique if v not in numbers]
    if numbers and names:
        raise DataError(f"the labels mix numbers {listed(numbers, 3)} and names {listed(names, 3)}: write every label "
                        "the same way, as class names (or as class ids) throughout")


def to_names(frame: pd.DataFrame, declared: dict | None) -> pd.Series:
    """The label column as class names, from ids or names; one not declared is an error, not a class of its own."""
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
    """Train/validation/test splits of the classes in names: the source's own where it has them (a lone held-out split
    is the test split: SST-2's test labels are hidden), else carved from train, stratified with config.split_seed."""
    frame = frame[frame["label"].isin(names)]
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})

    def dataset(rows: pd.DataFrame) -> Dataset:
        return Dataset.from_dict({"text": rows["text"].tolist(), "label": [names.index(v) for v in rows["label"]]},
                                 features=features)

    given = {s: frame[frame["split"] == s] for s in SPLITS if "split" in frame and (frame["split"] == s).any()}
    if "validation" in given and "test" not in given:
        given["test"] = given.pop("validation")
    pool = given.get("train", frame)
    _check_class_sizes(pool, names, 3 - len(given))
    splits = {"train": dataset(pool)}
    if "test" not in given:
        splits["train"], splits["test"] = _carve(splits["train"], config.test_fraction, config.split_seed, "test")
    if "validation" not in given:  # validation_fraction is of the whole, train is what test left
        fraction = config.validation_fraction / (1 if "test" in given else 1 - config.test_fraction)
        splits["train"], splits["validation"] = _carve(splits["train"], fraction, config.split_seed, "validation")
    splits.update({s: dataset(rows) for s, rows in given.items() if s != "train"})
    splits = DatasetDict({s: splits[s] for s in SPLITS})
    for name, setting in (("train", "train_size"), ("validation", "eval_size"), ("test", "eval_size")):
        splits[name] = subsample(splits[name], getattr(config, setting), config.split_seed, setting)
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
        looks_like_text = len(names) > len(rows) / 2  # hardly a class has two examples: texts, not classes
        raise DataError(f"classes {listed(too_few)} have fewer than {max(parts, 1)} training examples, too few for "
                        "stratified train/validation/test splits: add data or leave those classes out with labels=..."
                        + (f" ({len(names)} distinct labels in {len(rows)} rows: a text column?)"
                           if looks_like_text else ""))


def subsample(split: Dataset, size: int | None, seed: int, setting: str = "the sample size") -> Dataset:
    """A stratified subsample of size examples (the whole split when size is None or not smaller)."""
    if size is None or size >= len(split):
        return split
    classes = len(split.features["label"].names)
    if size < classes:
        raise DataError(f"{setting} of {size} is fewer than the {classes} classes, and a stratified sample holds one "
                        f"example of each: set {setting} to at least {classes}")
    if len(split) - size < classes:  # the stratified draw also needs one of each class left out
        raise DataError(f"{setting} of {size} out of {len(split)} examples leaves fewer than the {classes} classes "
                        f"outside the sample, which a stratified draw needs: set {setting} to at most "
                        f"{len(split) - classes}, or leave it unset to keep them all")
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
    rng = np.random.default_rng(seed)
    chosen = []
    for label, name in enumerate(split.features["label"].names):
        rows = np.flatnonzero(labels == label)
        if len(rows) < n:
            raise DataError(f"class {name!r} has {len(rows)} training examples, fewer than the {n} per class asked "
                            "for: ask for fewer, or use n='all'")
        chosen.append(rng.choice(rows, size=n, replace=False))
    return split.select(np.sort(np.concatenate(chosen)).tolist())


def tokenize(splits: DatasetDict, tokenizer, max_length: int, truncation: str = "head") -> DatasetDict:
    """Add input_ids and attention_mask (padding is the collator's); a longer text keeps its first max_length tokens
    ("head") or its first quarter and last three quarters ("head+tail": a review's verdict is often at its end)."""
    if truncation == "head":
        return splits.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length), batched=True)
    head = max_length // 4

    def head_and_tail(batch):
        encoded = tokenizer(batch["text"])  # special tokens sit at the ends, so they stay
        return {key: [v if len(v) <= max_length else v[:head] + v[len(v) - max_length + head:] for v in values]
                for key, values in encoded.items()}

    return splits.map(head_and_tail, batched=True)


def prepare(config: Config, tokenizer=None) -> DatasetDict:
    """Prepared splits for config: reused from data/ when its settings match, else built and saved."""
    target = config.paths.data
    if saved_settings(target) == config.data_settings():
        splits = load_from_disk(str(target / "splits"))
        if len(labels_of(splits)) < 2:  # prepared before single-class data was refused
            raise DataError(f"the prepared data in {target} holds a single class: prepare data with at least two")
        return splits
    if tokenizer is None:
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
    report.update(labels=names, splits={name: len(splits[name]) for name in SPLITS})

    def build(tmp: Path):
        splits.save_to_disk(str(tmp / "splits"))
        write_json_atomic(tmp / "report.json", report)
        write_json_atomic(tmp / "config.json", config.data_settings())  # only these: training settings are each step's

    replace_dir_atomic(build, target)
    return load_from_disk(str(target / "splits"))


def saved_settings(target: Path) -> dict | None:
    """The data settings of the splits prepared in target; None when there are none."""
    restore_backup(target)
    path = target / "config.json"
    if not path.exists() or not (target / "splits").exists():
        return None
    saved = json.loads(path.read_text())
    return {k: saved.get(k) for k in Config().data_settings()}


def load_prepared(paths: Paths | None = None) -> tuple[DatasetDict, Config]:
    """The splits notebook 01 saved (default: this mode's data/), and a Config of the settings that made them."""
    paths = paths or Config().paths
    settings = saved_settings(paths.data)
    if settings is None:
        raise DataError(f"no prepared data under {paths.data}: run notebooks/01_data_preparation.ipynb first")
    config = Config(**settings)
    if config.data_settings() != settings:  # small mode (set by the environment) would shrink data prepared in full
        config = Config(**settings, smoke=False)
    if paths != config.paths:
        config = config.replace(output_root=str(paths.base))
    return load_from_disk(str(paths.data / "splits")), config


def labels_of(splits: DatasetDict) -> list[str]:
    return splits["train"].features["label"].names


def digest(splits: DatasetDict) -> str:
    """A short hash of every split's texts and labels, in order: what a model was trained and tested on."""
    h = hashlib.sha256()
    for name in SPLITS:
        h.update(json.dumps([list(splits[name]["text"]), list(splits[name]["label"])], ensure_ascii=False).encode())
    return h.hexdigest()[:16]
