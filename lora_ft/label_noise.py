"""Notebook 10's grid: label errors planted where the truth is known (flipped at random or towards the confusable
class), how well each detector finds them (label_errors), and what LoRA gains from training on the cleaned labels.
Every step keeps what it measured (suspects files, detection tables, run records) and skips it the next time."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict

from . import experiments
from .config import Config
from .errors import ConfigError
from .experiments import Experiment
from .label_errors import embeddings, out_of_sample, read, suspects, write
from .run import NO_VALIDATION, train_and_score


def cached(path: Path, make) -> pd.DataFrame:
    """The suspects in path if it is there, else make() written to path: a notebook run again does not redo k
    trainings. The file name must say what made it."""
    return read(path) if Path(path).exists() else read(write(make(), path))


def suspects_file(folder: Path, name: str, detector: str, noise: str = "none", rate: float = 0.0,
                  draw: int = 0) -> Path:
    """Where notebook 10 keeps the suspects one detector found in data set name with labels flipped as said."""
    flipped = "" if noise == "none" else f"-{noise}{rate:g}-draw{draw}"
    return Path(folder) / "suspects" / f"{name}{flipped}-{detector}.csv"


def flip(labels, rate: float, seed: int, towards: dict[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, indices flipped): rate of the examples, drawn at random, get another class: drawn uniformly
    from the others, or towards[their class] (the class a model confuses it with most)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(len(labels), size=round(rate * len(labels)), replace=False))
    noisy, n_classes = labels.copy(), int(labels.max()) + 1
    for i in flipped:
        noisy[i] = towards[labels[i]] if towards else (labels[i] + rng.integers(1, n_classes)) % n_classes
    return noisy, flipped


def detection(found: pd.DataFrame, flipped: np.ndarray) -> dict:
    """Precision and recall of the flagged set against the examples known to be flipped."""
    hit = len(set(found["index"]) & set(flipped.tolist()))
    return {"flagged": len(found), "flipped": len(flipped), "found": hit,
            "precision": hit / len(found) if len(found) else 0.0,
            "recall": hit / len(flipped) if len(flipped) else 0.0}


def with_labels(train: Dataset, labels) -> Dataset:
    """train with its labels replaced (same classes)."""
    return train.remove_columns("label").add_column("label", np.asarray(labels).tolist()).cast(train.features)


def treated(train: Dataset, labels, found: pd.DataFrame, how: str) -> Dataset:
    """train with labels (noisy or clean) and, for how="removed", the suspects dropped; "relabelled": their labels
    set to the suggested ones; "as-is": untouched."""
    labels = np.asarray(labels).copy()
    names = train.features["label"].names
    if how == "relabelled":
        labels[found["index"].to_numpy()] = [names.index(s) for s in found["suggested"]]
    out = with_labels(train, labels)
    if how == "removed":
        out = out.select(sorted(set(range(len(out))) - set(found["index"].tolist())))
    elif how not in ("relabelled", "as-is"):
        raise ConfigError(f"unknown treatment {how!r}: choose as-is, removed or relabelled")
    return out


TREATMENTS = ("as-is", "removed", "relabelled")  # of the noisy labels; "clean" trains on the labels before flipping


def detections(train: Dataset, config: Config, rates, flip_seeds, detectors, folder: Path, name: str,
               towards: dict[int, int] | None = None, log=print) -> pd.DataFrame:
    """Precision and recall of each detector on train with labels flipped at each rate and draw, kept in
    folder/<name>-detection.csv; rows already there are not measured again."""
    target = Path(folder) / f"{name}-detection.csv"
    done = pd.read_csv(target) if target.exists() else pd.DataFrame()
    rows, features = done.to_dict("records"), None
    kind = "confusable" if towards else "random"
    for detector, rate, draw in itertools.product(detectors, rates, flip_seeds):
        kept = suspects_file(folder, name, detector, kind, rate, draw)
        if kept.exists() and any(r["detector"] == detector and r["rate"] == rate and r["flip_seed"] == draw
                                 for r in rows):
            continue
        rows = [r for r in rows if (r["detector"], r["rate"], r["flip_seed"]) != (detector, rate, draw)]
        noisy, flipped = flip(train["label"], rate, draw, towards)
        start = time.perf_counter()
        if detector == "probe" and features is None:  # the frozen encoder's embeddings do not depend on the labels
            features = embeddings(train, config)
        found = cached(kept, lambda: suspects(
            with_labels(train, noisy), out_of_sample(with_labels(train, noisy), config, detector, features=features)))
        rows.append({"data": name, "noise": kind, "rate": rate, "flip_seed": draw, "detector": detector,
                     **detection(found, flipped), "seconds": round(time.perf_counter() - start, 1)})
        log(f"{name} {kind} {rate:.0%} draw {draw}, {detector}: precision {rows[-1]['precision']:.3f}, recall "
            f"{rows[-1]['recall']:.3f}")
        write(pd.DataFrame(rows), target)
    return pd.DataFrame(rows)


def treatments(name: str, splits: DatasetDict, config: Config, noisy, found: pd.DataFrame, seeds, folder: Path,
               recipe: dict, labels=(*TREATMENTS, "clean"), log=print) -> dict[str, dict]:
    """LoRA on each treatment of the noisy labels (TREATMENTS) and on the clean ones, with each seed: test records
    <name>-<labels> in folder (finished ones skipped) keeping recipe (how noise and suspects were made); summaries."""
    grid = [Experiment(f"{name}-{how}", seed=seed, recipe={**recipe, "labels": how}, examples=len(splits["train"]))
            for how in labels for seed in seeds]

    def train(experiment: Experiment, settings: Config) -> dict:
        how = experiment.recipe["labels"]
        given = splits["train"]["label"] if how == "clean" else noisy
        data = DatasetDict(splits, train=treated(splits["train"], given, found, "as-is" if how == "clean" else how))
        record = train_and_score(settings, data, experiment.name, schedule=NO_VALIDATION, quiet=True)[0]
        return {**record, "recipe": experiment.recipe}

    return experiments.run(grid, config, folder, train, log)

