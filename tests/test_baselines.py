"""Baselines on a few hundred real tweets: valid records, honest scores, saved models that reproduce them."""

import json
import time

import numpy as np
import pytest
import torch
from datasets import DatasetDict
from safetensors.torch import load_file
from sklearn.feature_extraction.text import TfidfVectorizer

from lora_ft import Config, LoraFtError, baselines, data, results, training
from lora_ft.adapters import load_adapter, save_adapter
from lora_ft.measure import folder_mb, measure
from lora_ft.modeling import add_lora, load_model, load_tokenizer
from lora_ft.provenance import saved_adapter
from lora_ft.run import record as run_record
from lora_ft.serving import predict
from lora_ft.training import predict_logits, score


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = Config(smoke=True, train_size=200, eval_size=60, output_root=str(tmp_path_factory.mktemp("run")))
    splits = data.prepare(config)
    records = {f.__name__: f(splits, config) for f in (baselines.tfidf_logreg, baselines.linear_probe)}
    few = DatasetDict({**splits, "train": data.subsample(splits["train"], 96, config.seed)})  # 3 steps are enough here
    records["full_finetune"] = baselines.full_finetune(few, config)
    return dict(config=config, splits=splits, labels=data.labels_of(splits), records=records)


def reproduces(record, predictions, run):
    """The predictions give the record's test confusion matrix."""
    references = np.array(run["splits"]["test"]["label"])
    return score(references, predictions, run["labels"])["confusion_matrix"] == record["confusion_matrix"]


def test_records_are_valid_and_the_sklearn_fits_chose_c_on_validation(run):
    for record in run["records"].values():
        results.validate(record)
        assert record["n_examples"] == 60 and record["train"]["seconds"] > 0
        assert record["resources"]["saved_mb"] > 0 and record["resources"]["peak_memory_mb"] >= 0
    for name in ("tfidf_logreg", "linear_probe"):
        train = run["records"][name]["train"]
        assert [h["C"] for h in train["history"]] == list(baselines.C_GRID)
        assert train["best_validation_f1_macro"] == max(h["eval_f1_macro"] for h in train["history"])
    assert run["records"]["linear_probe"]["train"]["encode_examples_per_second"] > 0


def test_tfidf_and_probe_beat_the_majority_class(run):
    # on these 60 test tweets: majority 0.433, TF-IDF 0.683, probe 0.700 accuracy
    train, test = np.array(run["splits"]["train"]["label"]), np.array(run["splits"]["test"]["label"])
    majority = (test == np.bincount(train).argmax()).mean()
    for name in ("tfidf_logreg", "linear_probe"):
        metrics = run["records"][name]["metrics"]
        assert metrics["accuracy"] > majority + 0.15 and metrics["f1_macro"] > 0.5, (name, metrics)


def test_saved_sklearn_weights_reproduce_the_test_predictions(run):
    config, test = run["config"], run["splits"]["test"]
    folder = config.paths.model / "tfidf-logreg"
    weights = np.load(folder / "weights.npz", allow_pickle=False)
    terms = json.loads((folder / "vocabulary.json").read_text())
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, vocabulary=terms)
    vectorizer.idf_ = weights["idf"]
    logits = vectorizer.transform(test["text"]) @ weights["coef"].T + weights["intercept"]
    assert reproduces(run["records"]["tfidf_logreg"], logits.argmax(-1), run)

    weights = np.load(config.paths.model / "linear-probe" / "weights.npz", allow_pickle=False)
    encoder = load_model(config.model, run["labels"], config.seed).base_model  # the pretrained encoder, as it was
    features = training.embed(encoder, load_tokenizer(config.model), test)
    logits = features @ weights["coef"].T + weights["intercept"]
    assert reproduces(run["records"]["linear_probe"], logits.argmax(-1), run)


def test_the_probe_is_served_as_an_adapter_that_reproduces_its_predictions(run):
    """model/linear-probe/ is also an adapter (pooling=mean, the probe's classifier, LoRA B at zero): load_adapter
    and predict serve the probe, with the record's test predictions."""
    config, test = run["config"], run["splits"]["test"]
    folder = config.paths.model / "linear-probe"
    trained, labels = saved_adapter(folder)
    assert trained.pooling == "mean" and labels == run["labels"]
    logits = predict_logits(load_adapter(folder, trained, labels), load_tokenizer(str(folder)), test)
    assert reproduces(run["records"]["linear_probe"], logits.argmax(-1), run)
    served = predict(config.replace(precision="fp32"), test["text"], adapter=folder)
    assert [label for label, _ in served] == [labels[i] for i in logits.argmax(-1)]


def test_full_finetune_changes_every_weight_and_saves_a_whole_model(run, tmp_path):
    config, labels, record = run["config"], run["labels"], run["records"]["full_finetune"]
    assert record["params"]["trainable"] == record["params"]["total"] > 20_000_000
    assert record["config"]["learning_rate"] == 5e-5
    folder = config.paths.model / "full-finetune"
    saved = load_file(str(folder / "model.safetensors"))
    pretrained = load_model(config.model, labels, config.seed).state_dict()
    assert saved.keys() == pretrained.keys()
    # every tensor moved, where LoRA leaves all but its new head bit-for-bit as they were (test_lora.py)
    assert not any(torch.equal(saved[name], pretrained[name]) for name in saved)
    reloaded = load_model(str(folder), labels, config.seed)
    logits = predict_logits(reloaded, load_tokenizer(str(folder)), run["splits"]["test"])
    assert reproduces(record, logits.argmax(-1), run)

    assert record["resources"]["saved_mb"] == folder_mb(folder) >= 4 * record["params"]["total"] / 1e6
    save_adapter(add_lora(load_model(config.model, labels, config.seed), config), load_tokenizer(config.model),
                 config, labels, tmp_path / "adapter")
    assert record["resources"]["saved_mb"] > 30 * folder_mb(tmp_path / "adapter")
    assert not (config.paths.model / "full-finetune-checkpoints").exists()


def test_nothing_pickled_is_saved(run):
    files = [f for f in run["config"].paths.model.rglob("*") if f.is_file()]
    assert {f.suffix for f in files} <= {".json", ".npz", ".safetensors", ".txt"}
    for f in files:
        if f.suffix == ".npz":
            assert all(array.dtype != object for array in np.load(f, allow_pickle=False).values())


def test_measure_catches_a_short_peak():
    with measure() as usage:
        block = np.ones(200 * 10**6 // 8)  # written, so resident
        time.sleep(0.2)
        del block  # freed before the block ends: only the sampler saw it
    assert 180 <= usage["peak_memory_mb"] <= 300


def test_resources_are_optional_but_checked():
    config, labels, references = Config(smoke=True), ["a", "b"], np.array([0, 1, 1])
    train = {"seconds": 1.0, "examples_per_second": 3.0, "epochs": None, "history": []}
    params, resources = {"trainable": 1, "total": 1}, {"peak_memory_mb": 0.0, "saved_mb": 1.5}
    good = run_record("probe", "linear-probe", config, labels, "test", references, references, params, train,
                         resources)
    results.validate(good)
    results.validate({k: v for k, v in good.items() if k != "resources"})
    for resources, problem in (({"peak_memory_mb": -1.0, "saved_mb": 1.0}, "not numbers >= 0"),
                               ({"peak_memory_mb": 1.0}, r"lacks resources\.\['saved_mb'\]")):
        with pytest.raises(LoraFtError, match=problem):
            results.validate({**good, "resources": resources})
    with pytest.raises(LoraFtError, match=r"lacks \['train'\]"):
        results.validate({k: v for k, v in good.items() if k != "train"})
