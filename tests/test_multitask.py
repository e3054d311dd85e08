"""One base serving several task adapters (lora_ft.multitask), on a tiny random BERT: each task alone and rows of
different tasks mixed in one batch give what each adapter gives loaded by itself; mismatched adapters are refused;
predict classifies a file with several adapters in one pass."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from datasets import Dataset
from test_model_families import save_tiny_model, tiny_config

from lora_ft import ConfigError, cli, data
from lora_ft.adapters import load_adapter, save_adapter
from lora_ft.modeling import add_lora, load_model, load_tokenizer
from lora_ft.multitask import Tasks
from lora_ft.training import predict_logits

TASKS = {"sentiment": ["negative", "neutral", "positive"], "emotion": ["sadness", "joy", "love", "anger", "fear",
                                                                      "surprise"], "topic": ["sport", "politics"]}
TEXTS = ["I hate waiting on hold for hours", "the flight leaves at noon", "loved the crew, great trip", "why",
         "gate 12 is in terminal B and the lounge is closed for the whole afternoon, sadly", "amazing service"]


def save_task_adapter(base: str, root, name: str, labels: list[str], seed: int, **changes):
    """An adapter for labels on base with random (not zero) LoRA and head weights: each task computes its own."""
    config = tiny_config(base, root / name).replace(**changes)
    model = add_lora(load_model(base, labels, seed), config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.5)
    save_adapter(model, load_tokenizer(base), config, labels, config.paths.adapter)
    return config


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Three task adapters on one tiny BERT ({name: config}); the topic task truncates at 8 tokens."""
    root = tmp_path_factory.mktemp("tasks")
    base = save_tiny_model("bert", root / "base")
    return {name: save_task_adapter(base, root, name, labels, seed, **({"max_length": 8} if name == "topic" else {}))
            for seed, (name, labels) in enumerate(TASKS.items())}


@pytest.fixture(scope="module")
def tasks(adapters):
    return Tasks({name: config.paths.adapter for name, config in adapters.items()}, precision="fp32")


def alone(config, labels: list[str], texts: list[str]) -> np.ndarray:
    """The logits of an adapter loaded by itself onto a fresh base (as predict serves it, unmerged)."""
    tokenizer = load_tokenizer(str(config.paths.adapter))
    inputs = data.tokenize(Dataset.from_dict({"text": texts}), tokenizer, config.max_length, config.truncation)
    return predict_logits(load_adapter(config.paths.adapter, config, labels), tokenizer, inputs)


def test_each_task_gives_what_its_adapter_gives_alone(adapters, tasks):
    for name, config in adapters.items():
        expected = alone(config, TASKS[name], TEXTS)
        served = np.stack(tasks.logits(TEXTS, name))  # one batch, padded as predict_logits pads it
        assert served.shape == (len(TEXTS), len(TASKS[name]))
        np.testing.assert_allclose(served, expected, atol=1e-5)


def test_rows_of_different_tasks_in_one_batch_match_separate_batches(tasks):
    rng = np.random.default_rng(0)
    texts = TEXTS * 4
    per_row = rng.choice(list(TASKS), size=len(texts)).tolist()
    mixed = tasks.logits(texts, per_row, batch_size=8)  # each batch holds rows of two or three tasks
    for task in TASKS:  # the same rows, one task's at a time, batched alike (other padding moves logits by ~1e-5)
        rows = [i for i, name in enumerate(per_row) if name == task]
        apart = tasks.logits([texts[i] for i in rows], task, batch_size=8)
        for i, expected in zip(rows, apart):
            assert mixed[i].shape == (len(TASKS[task]),)
            np.testing.assert_allclose(mixed[i], expected, atol=2e-4)
            assert mixed[i].argmax() == expected.argmax()


def test_unknown_task_and_wrong_count_are_refused(tasks):
    with pytest.raises(ConfigError, match=r"no adapter named \['news'\]: the tasks served are"):
        tasks.logits(TEXTS, "news")
    with pytest.raises(Exception, match="6 texts but 2 task names"):
        tasks.logits(TEXTS, ["topic", "emotion"])


def test_adapters_of_different_bases_are_refused(adapters, tmp_path):
    other = save_tiny_model("bert", tmp_path / "other-base")
    stranger = save_task_adapter(other, tmp_path, "stranger", TASKS["topic"], 7)
    folders = {"sentiment": adapters["sentiment"].paths.adapter, "stranger": stranger.paths.adapter}
    with pytest.raises(ConfigError, match=r"trained on different base models \(sentiment: .*, stranger: .*\)"):
        Tasks(folders)


def test_dora_and_bad_names_are_refused(adapters, tmp_path):
    base = adapters["sentiment"].model
    dora = save_task_adapter(base, tmp_path, "dora", TASKS["topic"], 3, method="dora")
    with pytest.raises(ConfigError, match="is DoRA: one forward pass mixes LoRA adapters only"):
        Tasks({"sentiment": adapters["sentiment"].paths.adapter, "dora": dora.paths.adapter})
    with pytest.raises(ConfigError, match=r"task name\(s\) \['a.b'\] are not plain names"):
        Tasks({"a.b": adapters["sentiment"].paths.adapter})


def test_predict_classifies_a_file_with_several_adapters_in_one_pass(adapters, tmp_path):
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    pd.DataFrame({"id": range(len(TEXTS) + 1), "text": [*TEXTS, ""]}).to_csv(source, index=False)
    given = [word for name in ("sentiment", "topic")
             for word in ("--adapter", f"{name}={adapters[name].paths.adapter}")]
    assert cli.main(["predict", "--input", str(source), "--output", str(target), "precision=fp32", *given]) == 0
    out = pd.read_csv(target, keep_default_na=False)
    assert list(out.columns) == ["id", "text", *(column for name in ("sentiment", "topic") for column in (
        f"{name}_label", *(f"{name}_prob_{c}" for c in TASKS[name])))]
    assert out["topic_label"].iloc[-1] == ""  # a row without text keeps its place, unclassified
    for name in ("sentiment", "topic"):
        expected = alone(adapters[name], TASKS[name], TEXTS).argmax(-1)
        assert out[f"{name}_label"].iloc[:-1].tolist() == [TASKS[name][i] for i in expected]
        probs = out[[f"{name}_prob_{c}" for c in TASKS[name]]].iloc[:-1].astype(float).to_numpy()
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)


def test_predict_refuses_two_adapters_with_one_name(adapters, tmp_path, capsys):
    folder = adapters["sentiment"].paths.adapter
    assert cli.main(["predict", "good", "--adapter", f"x={folder}", "--adapter", f"x={folder}"]) != 0
    assert "two adapters are named ['x']: name each task's adapter apart" in capsys.readouterr().err


def test_predict_prints_each_tasks_label_for_each_text(adapters, capsys):
    given = [word for name in ("sentiment", "emotion")
             for word in ("--adapter", f"{name}={adapters[name].paths.adapter}")]
    assert cli.main(["predict", *TEXTS[:2], "precision=fp32", "--json", *given]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [row["text"] for row in printed] == TEXTS[:2]
    for name in ("sentiment", "emotion"):
        expected = alone(adapters[name], TASKS[name], TEXTS[:2]).argmax(-1)
        assert [row[name]["label"] for row in printed] == [TASKS[name][i] for i in expected]
