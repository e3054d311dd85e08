"""Which labels are wrong: out-of-sample class probabilities for every training example by k-fold cross-validation,
then confident learning (cleanlab; Northcutt et al. 2021) ranks the examples whose given label they doubt. Notebook 10
measures it where the truth is known (labels flipped on purpose, lora_ft.label_noise) and on the tweets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline

from . import training
from .config import Config
from .errors import ConfigError, DataError, listed
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
    single = [names[i] for i in range(len(names)) if counts[i] < 2]
    if single:
        raise DataError(f"class(es) {listed(single)} have fewer than 2 training examples: no fold can hold one out "
                        "and still train on it; label more examples of those classes, or leave them out (labels=)")
    few = [f"{names[i]} ({counts[i]})" for i in range(len(names)) if counts[i] < folds]
    if few:
        raise DataError(f"class(es) {listed(few)} have fewer training examples than the {folds} folds, and every fold "
                        f"must hold each class out: use --folds {int(counts.min())} or fewer, or label more examples "
                        "of those classes")


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
    probs = np.zeros((len(train), len(names)))
    for k, (fit, held) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        splits = DatasetDict(train=train.select(fit), validation=train.select(held), test=train.select(held))
        scored = train_and_score(config, splits, f"fold{k}", schedule=NO_VALIDATION, probabilities=True, quiet=True)[0]
        probs[held] = scored["probabilities"]
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
