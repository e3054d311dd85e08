"""Baselines on the LoRA run's splits and results contract: the majority class, the untrained pretrained model,
TF-IDF + logistic regression, a linear probe on the frozen encoder, and full fine-tuning; each measured for peak
memory and the size of what it saves, the trained ones for time too."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from . import data, training
from .adapters import write_adapter
from .config import FULL_FINETUNE_LEARNING_RATE, Config
from .errors import ConfigError
from .io import replace_dir_atomic, write_json_atomic
from .measure import folder_mb, measure
from .modeling import add_lora, count_params, load_model, load_tokenizer, mean_pooled
from .run import record, set_head, train_and_score
from .training import on_main_process

C_GRID = (0.5, 1.0, 2.0, 4.0)  # inverse L2 strength of the logistic regressions, chosen on validation macro-F1

def majority(splits, config: Config) -> dict:
    """Always the most frequent class of the training split: the floor any model must beat. Nothing is saved."""
    references = np.array(splits["test"]["label"])
    with measure() as resources:
        predictions = np.full_like(references, np.bincount(np.array(splits["train"]["label"])).argmax())
    return _record("majority", splits, config, predictions, {"trainable": 0, "total": 0}, None, resources)


def pretrained_baseline(splits, config: Config) -> dict:
    """The pretrained encoder with its seeded, untrained head: the "before" number. Nothing is saved beyond the base
    model; params count what a full fine-tune would train."""
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    with measure() as resources:
        model = load_model(config.model, data.labels_of(splits), config.seed, config.trust_remote_code,
                           config.quantize_4bit)
        predictions = training.predict_logits(model, tokenizer, splits["test"], config.eval_batch_size).argmax(-1)
    return _record("pretrained-baseline", splits, config, predictions, count_params(model), None, resources)


def tfidf_logreg(splits, config: Config) -> dict:
    """TF-IDF of word 1-2 grams + logistic regression; vocabulary, idf and weights saved under model/tfidf-logreg/."""
    labels = data.labels_of(splits)
    with measure() as resources:
        start = time.perf_counter()
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
        features = {"train": vectorizer.fit_transform(splits["train"]["text"]),
                    "validation": vectorizer.transform(splits["validation"]["text"])}
        classifier, info = _select_logreg(features, splits, config.seed, start)
        predictions = classifier.predict(vectorizer.transform(splits["test"]["text"]))

    def build(tmp: Path):
        settings = {"ngram_range": list(vectorizer.ngram_range), "sublinear_tf": vectorizer.sublinear_tf,
                    "min_df": vectorizer.min_df, "lowercase": vectorizer.lowercase, "C": info["C"], "labels": labels}
        write_json_atomic(tmp / "tfidf_logreg.json", settings)
        write_json_atomic(tmp / "vocabulary.json", vectorizer.get_feature_names_out().tolist())  # terms by column
        np.savez(tmp / "weights.npz", idf=vectorizer.idf_, coef=classifier.coef_, intercept=classifier.intercept_)

    return _record("tfidf-logreg", splits, config, predictions, _logreg_params(classifier), info, resources, build)


def linear_probe(splits, config: Config) -> dict:
    """Logistic regression on the frozen encoder's mean-pooled embeddings; only its weights go in model/linear-probe/
    (the encoder is the unchanged pretrained model)."""
    labels = data.labels_of(splits)
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    with measure() as resources:
        model = load_model(config.model, labels, config.seed, config.trust_remote_code, config.quantize_4bit)
        encoder = model.base_model.eval()
        if not config.quantize_4bit:  # a 4-bit model is already on its GPU
            encoder.to("cuda" if torch.cuda.is_available() else "cpu")
        start = time.perf_counter()
        features = {name: training.embed(encoder, tokenizer, splits[name]) for name in ("train", "validation")}
        encoded = (len(splits["train"]) + len(splits["validation"])) / (time.perf_counter() - start)
        classifier, info = _select_logreg(features, splits, config.seed, start)
        info["encode_examples_per_second"] = round(encoded, 2)
        predictions = classifier.predict(training.embed(encoder, tokenizer, splits["test"]))

    def build(tmp: Path):
        settings = {"model": config.model, "pooling": "mean", "max_length": config.max_length, "C": info["C"],
                    "labels": labels}
        write_json_atomic(tmp / "linear_probe.json", settings)
        np.savez(tmp / "weights.npz", coef=classifier.coef_, intercept=classifier.intercept_)
        if getattr(encoder, "pooler", None) is not None and not config.quantize_4bit:
            probe_adapter(model, tokenizer, classifier, config, labels, tmp)

    params = _logreg_params(classifier)
    params["total"] += count_params(encoder)["total"]
    return _record("linear-probe", splits, config, predictions, params, info, resources, build)


def probe_adapter(model, tokenizer, classifier, config: Config, labels: list[str], folder: Path) -> None:
    """Write the probe into folder as an adapter that predict, load_adapter and Tasks serve: pooling="mean" puts the
    encoder's mean in front of the classifier, which gets the probe's weights, and LoRA's B starts at zero, so the
    encoder is the frozen one the probe read (the same argmax as the probe's predictions, a test)."""
    settings = config.replace(pooling="mean", method="lora")
    mean_pooled(model)
    set_head(model.classifier, classifier)
    write_adapter(add_lora(model, settings), tokenizer, settings, labels, folder)


def full_finetune(splits, config: Config, schedule: dict | None = None, quiet: bool = False) -> dict:
    """Every weight trained with the LoRA run's settings at 1/20 of its step size (LoRA's would wreck the encoder),
    saved under model/full-finetune/; adapter settings (method, LoRA+, the contrastive phase) do not apply."""
    if config.quantize_4bit:
        raise ConfigError("full fine-tuning trains every weight, which a 4-bit quantized base cannot: "
                          "set quantize_4bit=False")
    config = config.replace(learning_rate=FULL_FINETUNE_LEARNING_RATE, loraplus_lr_ratio=None, contrastive=False)
    return train_and_score(config, splits, "full-finetune", kind="full-finetune", adapters=None, schedule=schedule,
                           save_to=config.paths.model / "full-finetune", quiet=quiet)[0]


def _select_logreg(features: dict, splits, seed: int, start: float):
    """The logistic regression on features["train"] with the best validation macro-F1 over C_GRID (the smaller C on
    a tie), and its train section: time since start (choosing C included), no epochs, the chosen C, all C's scores."""
    y_train, y_validation = (np.asarray(splits[name]["label"]) for name in ("train", "validation"))
    best, history = None, []
    for c in C_GRID:
        classifier = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(features["train"], y_train)
        predicted = classifier.predict(features["validation"])
        history.append({"C": c, "eval_accuracy": accuracy_score(y_validation, predicted),
                        "eval_f1_macro": f1_score(y_validation, predicted, average="macro", zero_division=0)})
        if best is None or history[-1]["eval_f1_macro"] > history[best]["eval_f1_macro"]:
            best, chosen = len(history) - 1, classifier
    seconds = time.perf_counter() - start
    return chosen, {"seconds": round(seconds, 3), "examples_per_second": round(len(y_train) / seconds, 2),
                    "epochs": None, "C": C_GRID[best], "best_validation_f1_macro": history[best]["eval_f1_macro"],
                    "history": history}


def _logreg_params(classifier) -> dict:
    trainable = int(classifier.coef_.size + classifier.intercept_.size)
    return {"trainable": trainable, "total": trainable}


def _record(kind: str, splits, config: Config, predictions, params: dict, info: dict | None, resources: dict,
            build=None) -> dict:
    """The test record, with what reuse needs saved under model/<kind>/ by build (None: nothing saved) and measured."""
    target = config.paths.model / kind
    if build is not None:
        on_main_process(replace_dir_atomic, build, target)
    resources["saved_mb"] = folder_mb(target) if build is not None else 0.0
    return record(kind, kind, config.untrained(), data.labels_of(splits), "test", np.array(splits["test"]["label"]),
                  np.asarray(predictions), params, info, resources)


# notebook 02's reference runs, by run name: each takes the splits and a Config and returns its test record
RUNS = {"majority": majority, "pretrained-baseline": pretrained_baseline, "tfidf-logreg": tfidf_logreg,
        "linear-probe": linear_probe, "full-finetune": full_finetune}
