"""Learning curves: exact per-class draws that differ by seed, one record per (method, n, draw) plus summaries,
finished points skipped, headline records reused at "all", SetFit optional, takeaways and the docs' paired figures
computed from the records, and every committed curve record still finished."""

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value

from lora_ft import Config, baselines, cli, curves, data, experiments, modeling, pipeline, results
from lora_ft.config import ROOT, TARGET_SETS
from lora_ft.errors import ConfigError, DataError
from lora_ft.multitask import Tasks
from lora_ft.run import NO_VALIDATION, init_head_from_probe, train_and_score
from lora_ft.training import predict_logits
from tests.test_model_families import save_tiny_model, tiny_config, tokenized_splits

DOC = ROOT / "docs" / "data-efficiency.md"


def toy(counts=(10, 6, 4)):
    labels = [label for label, count in enumerate(counts) for _ in range(count)]
    features = Features({"text": Value("string"), "label": ClassLabel(names=["a", "b", "c"])})
    return Dataset.from_dict({"text": [f"t{i}" for i in range(len(labels))], "label": labels}, features=features)


def test_sample_per_class_is_exact_and_differs_by_draw():
    split = toy()
    draws = {seed: data.sample_per_class(split, 3, seed) for seed in (42, 43)}
    for drawn in draws.values():
        assert np.bincount(drawn["label"]).tolist() == [3, 3, 3]
        assert len(set(drawn["text"])) == 9
    assert draws[42]["text"] != draws[43]["text"]
    assert data.sample_per_class(split, 3, 42)["text"] == draws[42]["text"]  # the seed decides
    assert data.sample_per_class(split, None, 42) is split
    with pytest.raises(DataError, match="class 'c' has 4 training examples, fewer than the 5 per class"):
        data.sample_per_class(split, 5, 42)


def test_draw_rule_and_names():
    assert [curves.draw_count(n) for n in (8, 32, 128, 512, None)] == [5, 5, 3, 3, 3]
    assert curves.draw_seeds(8) == (42, 43, 44, 45, 46) and curves.draw_seeds(None, 2) == (42, 43)
    assert curves.parse(curves.run_name("lora-small", 8)) == ("lora-small", 8)
    assert curves.parse(curves.run_name("setfit", None)) == ("setfit", None)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    config = Config(smoke=True, output_root=str(tmp_path_factory.mktemp("curves")), eval_size=30, max_length=32)
    pipeline.prepare(config, log=lambda _: None)
    return config


def test_a_curve_writes_one_record_per_draw_and_summaries_then_skips_them(config, monkeypatch):
    monkeypatch.setattr(curves, "SETFIT_SMOKE_STEPS", 2)
    lines = []
    summaries = experiments.learning_curves(config, methods=("tfidf-logreg", "setfit"), per_class=(4,), draws=2,
                                            log=lines.append)
    folder = config.paths.results / "curves"
    assert set(summaries) == {"curve-tfidf-logreg-n4", "curve-setfit-n4"}
    for run, summary in summaries.items():
        paths = [results.path_of(folder, run, seed) for seed in (42, 43)]
        assert paths[0] == folder / f"{run}.json" and paths[1] == folder / "seeds" / f"{run}.seed43.json"
        records = [results.read(path) for path in paths]
        assert [r["meta"]["seed"] for r in records] == [42, 43]
        assert all(r["config"]["train_size"] == 12 for r in records)
        assert all(r["curve"]["train_examples"] == 12 and r["n_examples"] == 30 for r in records)
        assert summary["n"] == 2 and (folder / "summaries" / f"{run}.json").is_file()
        assert summary["metrics"]["accuracy"]["mean"] == pytest.approx(np.mean([r["metrics"]["accuracy"]
                                                                                for r in records]))
        assert "seconds" in summary["train"] and "examples_per_second" in summary["train"]
    setfit = results.read(folder / "curve-setfit-n4.json")
    assert setfit["kind"] == "setfit" and setfit["train"]["steps"] == 2 and setfit["recipe"]["max_steps"] == 2
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("curve-*.json") if "summaries" not in p.parts}
    lines.clear()
    experiments.learning_curves(config, methods=("tfidf-logreg", "setfit"), per_class=(4,), draws=2, log=lines.append)
    assert lines == ["4 already done, skipped"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    table = curves.table(summaries)
    assert table["method"].tolist() == ["setfit", "tfidf-logreg"] and table["draws"].tolist() == [2, 2]


def test_a_method_above_its_cap_is_skipped_with_the_reason(config, monkeypatch, tmp_path):
    monkeypatch.setitem(curves.MAX_PER_CLASS, "tfidf-logreg", (3, "a test's cap"))
    lines = []
    summaries = experiments.learning_curves(config, methods=("tfidf-logreg",), per_class=(3, 4, None), draws=1,
                                            log=lines.append, results_dir=tmp_path)
    assert set(summaries) == {"curve-tfidf-logreg-n3"}
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["curve-tfidf-logreg-n3.json"]
    for n in ("4", "all"):
        assert f"curve-tfidf-logreg-n{n}: skipped, tfidf-logreg runs up to 3 per class: a test's cap" in lines
    assert curves.MAX_PER_CLASS["setfit"][0] == 128  # the cap the docs and notebook 07 give


def test_all_reuses_the_headline_record_with_the_same_settings(config):
    splits, prepared = data.load_prepared(config.paths)
    headline = baselines.tfidf_logreg(splits, prepared)
    results.write(headline, config.paths.results)
    lines = []
    experiments.learning_curves(config, methods=("tfidf-logreg",), per_class=(None,), draws=1, log=lines.append)
    assert any(line.startswith("curve-tfidf-logreg-nall seed 42: accuracy") and
               line.endswith("reused results/tfidf-logreg.json") for line in lines)
    record = results.read(config.paths.results / "curves" / "curve-tfidf-logreg-nall.json")
    assert record["metrics"] == headline["metrics"] and record["run"] == "curve-tfidf-logreg-nall"


def test_setfit_missing_is_a_clear_error(config, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "setfit" else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs the setfit package.*pip install 'setfit>=1.1'"):
        experiments.learning_curves(config, methods=("setfit",), per_class=(4,))
    assert cli.main(["curves", "--methods", "tfidf-logreg,setfit", f"output_root={config.output_root}",
                     "smoke=true"]) == 2
    assert "error: method 'setfit' needs the setfit package" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown method"):
        curves.check_methods(("svm",))


def test_takeaways_are_paired_by_draw():
    def draws(method, n, scores):
        return [{"method": method, "per_class": n, "seed": 42 + i, "accuracy": a} for i, a in enumerate(scores)]

    rows = (draws("setfit", 8, [0.60, 0.62, 0.58]) + draws("lora-small", 8, [0.50, 0.53, 0.47])
            + draws("tfidf-logreg", 8, [0.45, 0.46, 0.44]) + draws("setfit", 32, [0.66, 0.67, 0.65])
            + draws("lora-small", 32, [0.70, 0.69, 0.71]) + draws("tfidf-logreg", 32, [0.70, 0.68, 0.705]))
    lines = curves.takeaways(pd.DataFrame(rows))
    assert lines[0] == ("n = 8 per class: setfit leads with 0.6000; setfit vs lora-small: +10.00 ± 0.58 points of "
                        "accuracy (paired over 3, setfit ahead in 3 of 3), beyond the spread.")
    # lora-small's lead at 32 over tfidf-logreg: differences 0, 1, 0.5 points: 0.50 ± 0.29, noise
    assert lines[1].endswith("lora-small vs tfidf-logreg: +0.50 ± 0.29 points of accuracy (paired over 3, "
                             "lora-small ahead in 2 of 3), noise.")
    assert lines[2].startswith("n = 32 per class, SetFit against LoRA (lora-small): setfit vs lora-small: "
                               "-4.00 ± 1.15")  # at 8 per class the first line compared them already
    assert "TF-IDF + logistic regression is within 1 point of the best at n = 32 per class." in lines
    assert not any(line.startswith("Recommendation") for line in lines)  # report_curves' rule says which to use
    # where the default ran, it speaks for LoRA unless another recipe leads it beyond the spread
    level = rows + draws("lora", 32, [0.69, 0.70, 0.70])
    assert "SetFit against LoRA (lora): setfit vs lora:" in " ".join(curves.takeaways(pd.DataFrame(level)))
    ahead = rows + draws("lora", 32, [0.60, 0.61, 0.60])
    assert "SetFit against LoRA (lora-small): setfit vs lora-small:" in " ".join(curves.takeaways(pd.DataFrame(ahead)))


def test_the_docs_paired_figures_are_what_the_committed_records_give():
    """docs/data-efficiency.md quotes curves.paired_table(experiments.records) between its markers."""
    text = DOC.read_text()
    generated = curves.paired_table(experiments.records)
    assert len(curves.paired_rows(experiments.records)) == len(curves.QUOTED)  # each quoted comparison is there
    assert curves.render_doc(text, generated) == text, (
        "docs/data-efficiency.md's paired table differs from the records: regenerate it with python -c "
        "\"from lora_ft import curves, experiments; print(curves.paired_table(experiments.records))\" and update "
        "the prose's verdicts")


def test_every_committed_curve_record_is_finished():
    """Planning notebook 07's full grid and the emotion replication over the committed records (no training) finds
    every record finished: the grid's data still describes what was run."""
    folder = ROOT / "results" / "curves"
    train_examples = results.read(folder / "curve-lora-small-nall.json")["curve"]["train_examples"]
    grid = experiments.curve_grid(Config(smoke=False), classes=3, train_examples=train_examples, log=lambda _: None)
    todo, done = experiments.plan(grid, Config(smoke=False), folder)
    assert todo == [] and len(done) == len(list(folder.glob("*.json"))) + len(list((folder / "seeds").glob("*.json")))
    emotion = ROOT / "results" / "public" / "setfit-emotion"
    config = Config(smoke=False, dataset=str(ROOT.parent / "shared" / "datasets" / "emotion"), max_length=256,
                    labels=("sadness", "joy", "love", "anger", "fear", "surprise"),
                    output_root=str(ROOT / "runs" / "public" / "setfit-emotion"))
    grid = experiments.curve_grid(config, ("setfit", "lora-small", "lora"), (8, 64), 10, classes=6, train_examples=0)
    todo, done = experiments.plan(grid, config, emotion)
    assert todo == [] and len(done) == 60


def test_lpft_starts_the_head_from_a_linear_probe_on_the_pooler_output(config):
    from sklearn.linear_model import LogisticRegression

    from lora_ft.modeling import load_tokenizer, model_for_training

    splits, _ = data.load_prepared(config.paths)
    train = data.sample_per_class(splits["train"], 4, 42)
    labels = data.labels_of(splits)
    model = model_for_training(config, labels).eval()
    before = model.classifier.weight.detach().clone()
    tokenizer = load_tokenizer(config.model)
    init_head_from_probe(model, tokenizer, train, seed=42)
    assert not torch.equal(model.classifier.weight, before)
    batch = tokenizer.pad(train.select_columns(["input_ids", "attention_mask"])[:], return_tensors="pt")
    with torch.inference_mode():
        features = model.bert(**batch).pooler_output.numpy()
        logits = model(**batch).logits.numpy()
    probe = LogisticRegression(C=1.0, max_iter=5000, random_state=42).fit(features, train["label"])
    np.testing.assert_allclose(logits, probe.decision_function(features), rtol=1e-4, atol=1e-4)
    assert not model.training  # left in the mode it was in (eval here)

    model.bert.pooler = None  # a head that does not read the pooler output
    with pytest.raises(ConfigError, match="a head started from a linear probe needs a BERT-style.*use lora-small"):
        init_head_from_probe(model, tokenizer, train, seed=42)


def test_lpft_trains_a_fixed_number_of_steps_like_lora_small(config):
    splits, _ = data.load_prepared(config.paths)
    full = config.replace(smoke=False)  # small mode caps every run at one epoch
    small, lpft = (p.settings(full) for p in experiments.curve_grid(full, ("lora-small", "lora-lpft"), (4,), 1,
                                                                    classes=3, train_examples=len(splits["train"])))
    assert small.epochs == lpft.epochs and small.epochs * 12 / small.batch_size >= curves.LORA_SMALL_STEPS
    assert lpft.target_modules == TARGET_SETS["all-linear"] and lpft.early_stopping_patience == 0


def test_train_advises_the_probe_and_setfit_below_128_per_class():
    assert pipeline.few_labels_advice(toy((200, 150, 128))) is None
    advice = pipeline.few_labels_advice(toy((200, 150, 127)))
    assert "the smallest class has 127 training examples" in advice
    assert "python -m lora_ft baseline --no-full-finetune" in advice and "SetFit" in advice
    assert "python -m lora_ft predict --adapter model/linear-probe" in advice  # tests/test_baselines.py serves it


def test_an_ensemble_scores_the_mean_of_its_members_probabilities(tmp_path):
    """experiments.ensemble: members differ only in their training seed (member 0 is config's own run), the record
    predicts the class with the highest mean probability, and keeps each member's score, their summed time and the
    number of members (its recipe); the saved members, served from one base by multitask.Tasks, give the same mean
    probabilities."""
    config = tiny_config(save_tiny_model("bert", tmp_path / "base"), tmp_path, epochs=1.0, min_steps=2)
    tokenizer = modeling.load_tokenizer(config.model)
    splits = tokenized_splits(tokenizer)
    made = experiments.ensemble(config, splits, 2, schedule=NO_VALIDATION, save_to=tmp_path / "ensemble")
    alone, probabilities = [], []
    for seed in (config.seed, config.seed + experiments.MEMBER_SEEDS):
        record, model = train_and_score(config.replace(seed=seed), splits, schedule=NO_VALIDATION, quiet=True)
        alone.append(record)
        probabilities.append(torch.softmax(torch.from_numpy(predict_logits(model, tokenizer, splits["test"])), -1))
    assert made["recipe"] == {"members": 2}
    assert made["train"]["members"] == [r["metrics"]["accuracy"] for r in alone]
    assert made["config"] == alone[0]["config"] and made["meta"]["seed"] == config.seed
    predicted = torch.stack(probabilities).mean(0).argmax(-1).numpy()
    assert made["metrics"]["accuracy"] == pytest.approx(np.mean(predicted == np.array(splits["test"]["label"])))
    results.validate(made)
    served = Tasks({f"member-{k}": tmp_path / "ensemble" / f"member-{k}" for k in (0, 1)}, precision="fp32")
    texts = splits["test"]["text"]
    mean = np.mean([served.probabilities(texts, f"member-{k}") for k in (0, 1)], axis=0)  # one base, both adapters
    np.testing.assert_allclose(mean, torch.stack(probabilities).mean(0).numpy(), atol=1e-4)
    with pytest.raises(ConfigError, match="an ensemble trains the Trainer's LoRA recipe"):
        experiments.train_point("setfit", splits, config, members=2)
