"""Which labels are wrong: out-of-sample class probabilities for every training example by k-fold cross-validation,
then confident learning (cleanlab; Northcutt et al. 2021) ranks the examples whose given label they doubt. Notebook 10
measures it where the truth is known (labels flipped on purpose) and on the tweets."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from datasets import Dataset, DatasetDict
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline

from . import experiments, training
from .config import Config
from .errors import ConfigError, DataError, listed
from .experiments import Experiment
from .io import atomic_file
from .modeling import load_model, load_tokenizer
from .run import NO_VALIDATION, train_and_score

METHODS = ("tfidf", "probe", "lora")  # cheapest first: TF-IDF + logistic regression, a linear probe, LoRA per fold
FOLDS = 5
COLUMNS = ("index", "text", "given", "suggested", "quality", "confidence")  # the suspects file, in this order


def check_folds(labels, names: list[str], folds: int) -> None:
    """Every fold must hold out examples of every class: refuse classes with fewer examples than folds."""
    if folds < 2:
        raise ConfigError(f"folds={folds}: cross-validation needs at least 2 folds (default {FOLDS})")
    counts = np.bincount(np.asarray(labels), minlength=len(names))
    few = [f"{names[i]} ({counts[i]})" for i in range(len(names)) if counts[i] < folds]
    if few:
        raise DataError(f"class(es) {listed(few)} have fewer training examples than the {folds} folds, and every fold "
                        f"must hold each class out: use folds={max(2, int(counts.min()))} or fewer, or label more "
                        "examples of those classes")


def embeddings(train: Dataset, config: Config) -> np.ndarray:
    """The frozen encoder's mean-pooled embedding of every text of train (what the probe reads)."""
    encoder = load_model(config.model, train.features["label"].names, config.seed, config.trust_remote_code)
    return training.embed(encoder.base_model.eval(), load_tokenizer(config.model, config.trust_remote_code), train)


def out_of_sample(train: Dataset, config: Config, method: str = "probe", folds: int = FOLDS, log=None,
                  features: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities of every example of train from a model that never saw it: k stratified folds, each scored
    by method fitted on the others (the probe's encoder is frozen, so it embeds every text once; features: those
    embeddings, if already made)."""
    labels, names = np.asarray(train["label"]), train.features["label"].names
    check_folds(labels, names, folds)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=config.seed)
    if method == "tfidf":  # C fixed at scikit-learn's default: no data is left over to choose it
        model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                              LogisticRegression(max_iter=5000))
        return cross_val_predict(model, train["text"], labels, cv=splitter, method="predict_proba")
    if method == "probe":
        features = embeddings(train, config) if features is None else features
        return cross_val_predict(LogisticRegression(max_iter=5000), features, labels, cv=splitter,
                                 method="predict_proba")
    if method != "lora":
        raise ConfigError(f"unknown method {method!r} for out-of-sample probabilities: choose from {listed(METHODS)}")
    tokenizer, probs = load_tokenizer(config.model, config.trust_remote_code), np.zeros((len(train), len(names)))
    for k, (fit, held) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        splits = DatasetDict(train=train.select(fit), validation=train.select(held), test=train.select(held))
        _, model = train_and_score(config, splits, f"fold{k}", schedule=NO_VALIDATION, quiet=True)
        logits = training.predict_logits(model, tokenizer, splits["test"], config.eval_batch_size)
        probs[held] = torch.from_numpy(logits).float().softmax(-1).numpy()
        if log is not None:
            log(f"fold {k + 1} of {folds}: LoRA trained on {len(fit):,} examples, {len(held):,} scored")
    return probs


def cleanlab():
    """cleanlab's (find_label_issues, get_label_quality_scores), or a ConfigError saying how to install it."""
    try:  # optional dependency: only find-label-errors and notebook 10 need it
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise ConfigError("cleanlab is not installed: pip install cleanlab (find-label-errors needs it)") from None
    return find_label_issues, get_label_quality_scores


def suspects(train: Dataset, probs: np.ndarray) -> pd.DataFrame:
    """The examples confident learning flags as mislabelled, most doubtful first: their index in train, text, given
    label, the label the probabilities suggest, label quality (cleanlab's self-confidence, low is doubtful) and the
    probability of the suggested label."""
    find_label_issues, get_label_quality_scores = cleanlab()
    labels, names = np.asarray(train["label"]), train.features["label"].names
    ranked = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(labels, probs)
    texts = train.select(ranked)["text"] if len(ranked) else []
    return pd.DataFrame({"index": ranked, "text": texts, "given": [names[i] for i in labels[ranked]],
                         "suggested": [names[i] for i in probs[ranked].argmax(-1)],
                         "quality": quality[ranked].round(4), "confidence": probs[ranked].max(-1).round(4)},
                        columns=list(COLUMNS))


def write(frame: pd.DataFrame, target: Path) -> Path:
    """A frame (the suspects) as a CSV (UTF-8, a text's own quotes and newlines quoted), atomically."""
    with atomic_file(Path(target)) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(target)


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"text": str, "given": str, "suggested": str}, keep_default_na=False)


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


# ---- notebook 10's grid: detection where the truth is known, and what training on the cleaned labels gains

TREATMENTS = ("as-is", "removed", "relabelled")  # of the noisy labels; "clean" trains on the labels before flipping


def detections(train: Dataset, config: Config, rates, flip_seeds, detectors, folder: Path, name: str,
               towards: dict[int, int] | None = None, log=print) -> pd.DataFrame:
    """Precision and recall of each detector on train with labels flipped at each rate and draw, kept in
    folder/<name>-detection.csv; rows already there are not measured again."""
    target = Path(folder) / f"{name}-detection.csv"
    done = pd.read_csv(target) if target.exists() else pd.DataFrame()
    rows, features = done.to_dict("records"), None
    kind = "confusable" if towards else "random"
    for detector, rate, draw in ((d, r, s) for d in detectors for r in rates for s in flip_seeds):
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
    """LoRA trained on each treatment of the noisy labels (TREATMENTS) and on the clean ones ("clean": the split's own
    labels), with each seed, scored on the test split: records <name>-<labels> in folder, skipped when finished;
    recipe (how the noise and the suspects were made) goes into every record. Summaries by name."""
    grid = [Experiment(f"{name}-{how}", seed=seed, recipe={**recipe, "labels": how})
            for how in labels for seed in seeds]

    def train(experiment: Experiment, settings: Config) -> dict:
        how = experiment.recipe["labels"]
        given = splits["train"]["label"] if how == "clean" else noisy
        data = DatasetDict(splits, train=treated(splits["train"], given, found, "as-is" if how == "clean" else how))
        record = train_and_score(settings, data, experiment.name, schedule=NO_VALIDATION, quiet=True)[0]
        return {**record, "recipe": experiment.recipe}

    return experiments.run(grid, config, folder, train, log)

