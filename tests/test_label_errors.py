"""Finding mislabelled examples (lora_ft.label_errors, find-label-errors) on tiny data: planted flips are found, LoRA
folds are out of sample, the suspects file round-trips, too few examples for the folds and a missing cleanlab are
refused with the fix."""

import sys

import numpy as np
import pandas as pd
import pytest
from datasets import ClassLabel, Dataset, Features, Value
from sklearn.model_selection import StratifiedKFold

from lora_ft import Config, ConfigError, DataError, cli, label_errors, label_noise
from lora_ft.modeling import load_tokenizer
from lora_ft.run import NO_VALIDATION, train_and_score
from lora_ft.training import predict_logits
from tests.test_model_families import save_tiny_model, tiny_config, tokenized_splits

GOOD = ["great", "love", "wonderful", "excellent", "happy", "superb", "delight", "fantastic"]
BAD = ["awful", "hate", "terrible", "horrible", "sad", "dreadful", "disgust", "miserable"]


def reviews(n: int = 80, seed: int = 0) -> Dataset:
    """n short texts, half of each class, told apart by their words alone."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(GOOD if i % 2 else BAD, size=4)) + f" item {i}" for i in range(n)]
    features = Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
    return Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(n)]}, features=features)


def test_planted_flips_are_found_and_ranked_first():
    pytest.importorskip("cleanlab")
    train = reviews()
    noisy, flipped = label_noise.flip(train["label"], 0.1, seed=1)
    assert len(flipped) == 8 and (np.asarray(noisy)[flipped] != np.asarray(train["label"])[flipped]).all()
    assert (np.delete(noisy, flipped) == np.delete(train["label"], flipped)).all()
    probs = label_errors.out_of_sample(label_noise.with_labels(train, noisy), Config(), "tfidf", folds=4)
    found = label_errors.suspects(label_noise.with_labels(train, noisy), probs)
    measured = label_noise.detection(found, flipped)
    assert measured["recall"] == 1.0 and measured["precision"] >= 0.8, measured
    assert list(found.columns) == list(label_errors.COLUMNS)
    assert found["quality"].is_monotonic_increasing  # most doubtful first
    first = found.iloc[0]
    assert first["given"] != first["suggested"] and first["text"] == train[int(first["index"])]["text"]


def test_flips_towards_the_confusable_class():
    labels = np.array([0, 1, 2] * 20)
    noisy, flipped = label_noise.flip(labels, 0.5, seed=0, towards={0: 1, 1: 2, 2: 0})
    assert len(flipped) == 30 and (noisy[flipped] == (labels[flipped] + 1) % 3).all()


def test_removed_and_relabelled_treatments():
    train = reviews(10)
    found = pd.DataFrame({"index": [3, 6], "suggested": ["negative", "positive"]})
    assert len(label_noise.treated(train, train["label"], found, "removed")) == 8
    relabelled = label_noise.treated(train, train["label"], found, "relabelled")["label"]
    assert relabelled[3] == 0 and relabelled[6] == 1 and relabelled[:3] == train["label"][:3]
    with pytest.raises(ConfigError, match="unknown treatment 'dropped'"):
        label_noise.treated(train, train["label"], found, "dropped")


def test_the_suspects_file_round_trips(tmp_path):
    frame = pd.DataFrame({"index": [4, 1], "text": ['a "quoted", text', "two\nlines, and ü"], "given": ["0", "1"],
                          "suggested": ["1", "0"], "quality": [0.0123, 0.2], "confidence": [0.91, 0.6]})
    path = label_errors.write(frame, tmp_path / "suspects.csv")
    pd.testing.assert_frame_equal(label_errors.read(path), frame)


def test_too_few_examples_per_class_for_the_folds_is_refused():
    with pytest.raises(DataError, match=r"class\(es\) \['positive \(3\)'\] have fewer training examples than the 5 "
                                        r"folds.*use --folds 3 or fewer"):
        label_errors.check_folds([0] * 10 + [1] * 3, ["negative", "positive"], 5)
    with pytest.raises(DataError, match=r"class\(es\) \['positive'\] have fewer than 2 training examples"):
        label_errors.check_folds([0] * 10 + [1], ["negative", "positive"], 5)
    with pytest.raises(ConfigError, match="at least 2 folds"):
        label_errors.check_folds([0, 1], ["negative", "positive"], 1)


def test_a_missing_cleanlab_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match="cleanlab is not installed: pip install cleanlab"):
        label_errors.cleanlab()


def test_the_command_writes_ranked_suspects(tmp_path, capsys):
    pytest.importorskip("cleanlab")
    rows = reviews(200)
    frame = pd.DataFrame({"text": rows["text"], "label": ["positive" if y else "negative" for y in rows["label"]]})
    wrong = list(range(0, 200, 10))
    frame.loc[wrong, "label"] = frame.loc[wrong, "label"].map({"positive": "negative", "negative": "positive"})
    frame.to_csv(tmp_path / "reviews.csv", index=False)
    root = f"output_root={tmp_path / 'out'}"
    assert cli.main(["prepare", f"dataset={tmp_path / 'reviews.csv'}", root, "train_size=None"]) == 0
    assert cli.main(["find-label-errors", "--method", "tfidf", "--folds", "3", root]) == 0
    assert "training labels suspected (tfidf, 3 folds) ->" in capsys.readouterr().out
    found = label_errors.read(tmp_path / "out" / "results" / "label-errors.csv")
    assert list(found.columns) == list(label_errors.COLUMNS) and len(found) >= 1
    planted = set(frame.loc[wrong, "text"])
    assert sum(text in planted for text in found["text"]) >= 0.8 * len(found)  # mostly the labels made wrong
    assert cli.main(["find-label-errors", "--folds", "500", root]) == 2
    assert "have fewer training examples than the 500 folds" in capsys.readouterr().err


def test_lora_folds_score_each_example_with_a_model_that_never_saw_it(tmp_path):
    """method "lora": each fold's held-out rows get the probabilities of a run trained on the other folds alone."""
    config = tiny_config(save_tiny_model("bert", tmp_path / "base"), tmp_path, epochs=1.0, min_steps=2)
    tokenizer = load_tokenizer(config.model)
    train = tokenized_splits(tokenizer)["train"]
    probs = label_errors.out_of_sample(train, config, "lora", folds=2)
    assert probs.shape == (len(train), 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    labels = np.asarray(train["label"])
    fit, held = next(StratifiedKFold(2, shuffle=True, random_state=config.seed).split(np.zeros(len(labels)), labels))
    alone = train.select(fit)
    model = train_and_score(config, {"train": alone, "validation": alone, "test": train.select(held)},
                            schedule=NO_VALIDATION, quiet=True)[1]
    logits = predict_logits(model, tokenizer, train.select(held))
    np.testing.assert_allclose(probs[held], np.exp(logits) / np.exp(logits).sum(1, keepdims=True), atol=1e-5)
