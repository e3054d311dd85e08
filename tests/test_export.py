"""What a run saves works without this package: the adapter names its base by hub id and loads with peft's Auto
class as its model card says, the merged export (train, and the export step) is served by transformers.pipeline
with predict's predictions, the cards parse with huggingface_hub and their snippets run; and the test split, scored
as a user's labelled file through `predict --input`, gets the test record's scores.

The base is a tiny random BERT under a hub id in a temporary Hugging Face cache, offline: what a download leaves on
a user's machine. Runs and the project's own predictions happen in one child process; the checks that must not
use lora_ft in another, where importing it fails.
"""

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from huggingface_hub import ModelCard
from test_model_families import save_tiny_model

from lora_ft import Config
from lora_ft.adapters import save_adapter
from lora_ft.config import DEFAULT_MODEL
from lora_ft.modeling import add_lora, load_model, load_tokenizer, public_name, resolve_model

HUB_ID = "lora-ft-tests/tiny-bert"
CLASSES = {  # class -> words its texts are made of
    "negative": ["awful", "terrible", "hate", "worst", "delayed"],
    "neutral": ["flight", "gate", "terminal", "noon", "schedule"],
    "positive": ["love", "great", "thanks", "amazing", "friendly"],
    "question": ["why", "when", "how", "where", "which"],
}
PROBE = ["I hate this awful delay", "the gate is in terminal B", "thanks, great crew!", "why is it late?",
         " ".join(["a very long text"] * 20) + " love it"]  # longer than max_length: both sides must cut it alike
SETTINGS = ["smoke=false", "epochs=2", "batch_size=8", "learning_rate=0.01", "warmup=0", "early_stopping_patience=0",
            "max_length=32", "contrastive=false"]  # the Trainer's recipe, whose BERT head exports


def hub_cache(folder: Path) -> Path:
    """A Hugging Face cache holding HUB_ID, laid out as a download leaves it."""
    repo, commit = folder / f"models--{HUB_ID.replace('/', '--')}", "0" * 40
    save_tiny_model("bert", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return folder


def write_data(path: Path, classes: int) -> Path:
    rng = random.Random(0)
    rows = [(f"{' '.join(rng.choices(words, k=4))} #{i}", label)
            for label, words in list(CLASSES.items())[:classes] for i in range(24)]
    path.write_text("text,label\n" + "\n".join(f"{text},{label}" for text, label in rows) + "\n")
    return path


def child(body: str, cwd: Path, cache: Path, without_package: bool = False) -> str:
    prelude = "import sys\nsys.modules['lora_ft'] = None  # importing it fails\n" if without_package else ""
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    if without_package:
        env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(body)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


@pytest.fixture(scope="module", params=[3, 4], ids=["3-class", "4-class"])
def run(request, tmp_path_factory):
    """A tiny run on HUB_ID (baselines, train, export), then what the project and, without it, peft and
    transformers make of what it saved."""
    tmp = tmp_path_factory.mktemp(f"export{request.param}")
    cache, root = hub_cache(tmp / "hf"), tmp / "run"
    data = write_data(tmp / "data.csv", request.param)
    where = [f"output_root={root}", "smoke=false"]
    child(f"""
        import contextlib, io, json, shutil
        import numpy as np, pandas as pd, torch
        from lora_ft import baselines, cli, data, results
        from lora_ft.adapters import load_adapter
        from lora_ft.config import Config
        from lora_ft.modeling import load_tokenizer
        from lora_ft.provenance import saved_adapter

        assert cli.main(["prepare", "dataset={data}", "model={HUB_ID}", *{SETTINGS!r}, *{where!r}]) == 0
        splits, config = data.load_prepared(Config(output_root={str(root)!r}, smoke=False).paths)
        for step in (baselines.majority, baselines.tfidf_logreg):
            results.write(step(splits, config), config.paths.results)
        assert cli.main(["train", *{SETTINGS!r}, *{where!r}]) == 0
        assert cli.main(["export", "--output", {str(tmp / "exported")!r}, *{where!r}]) == 0
        test = splits["test"]  # as a user's own labelled file: scored beside its labels, into a results record
        gold = [test.features["label"].names[i] for i in test["label"]]
        pd.DataFrame({{"text": test["text"], "label": gold}}).to_csv("test.csv", index=False)
        assert cli.main(["predict", "--input", "test.csv", "--output", "scored.csv", "precision=fp32",
                         *{where!r}]) == 0

        adapter = config.paths.adapter
        config, labels = saved_adapter(adapter)
        copy = shutil.copytree(adapter, {str(tmp / "elsewhere" / "adapter")!r})
        tokenizer = load_tokenizer(str(adapter))
        batch = tokenizer({PROBE!r}, truncation=True, max_length=32, padding=True, return_tensors="pt")
        with torch.no_grad():
            for name, folder in (("project", adapter), ("copy", copy)):
                np.save(name + ".npy", load_adapter(folder, config, labels)(**batch).logits.numpy())
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):  # python -m lora_ft predict --json precision=fp32 TEXTS...
            assert cli.main(["predict", "--json", "precision=fp32", *{where!r}, *{PROBE!r}]) == 0
        with open("predict.json", "w") as f:
            f.write(printed.getvalue())
        """, tmp, cache)
    child(f"""
        import json, re
        import numpy as np, torch

        for folder in ("lora-adapter", "lora-merged"):  # every snippet of both cards, as a user would paste it
            snippets = re.findall(r"```python\\n(.*?)```", open(f"model/{{folder}}/README.md").read(), re.S)
            assert len(snippets) == 2, snippets
            for snippet in snippets:
                scope = {{}}
                exec(snippet, scope)
        peft_card, pipeline_card = snippets
        scope = {{}}
        exec(peft_card, scope)  # the call the card states
        model, tokenizer = scope["model"], scope["tokenizer"]
        with torch.no_grad():
            logits = model(**tokenizer({PROBE!r}, truncation=True, padding=True, return_tensors="pt")).logits
        np.save({str(tmp / "peft.npy")!r}, logits.numpy())
        exec(pipeline_card, scope)
        served = scope["classifier"]({PROBE!r}, truncation=True, top_k=None)
        with open({str(tmp / "pipeline.json")!r}, "w") as f:
            json.dump({{"pipeline": served, "id2label": model.config.id2label}}, f)
        assert sys.modules["lora_ft"] is None
        """, root, cache, without_package=True)
    labels = list(CLASSES)[:request.param]
    return dict(tmp=tmp, root=root, labels=labels, adapter=root / "model" / "lora-adapter",
                merged=root / "model" / "lora-merged", **json.loads((tmp / "pipeline.json").read_text()))


def strings(value):
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def test_adapter_names_its_base_by_hub_id_and_holds_no_path(run):
    saved = json.loads((run["adapter"] / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == HUB_ID
    assert not [s for s in strings(saved) if s.startswith(os.sep) or str(run["tmp"]) in s]


def test_a_copy_of_the_adapter_elsewhere_gives_the_same_logits(run):
    np.testing.assert_array_equal(np.load(run["tmp"] / "copy.npy"), np.load(run["tmp"] / "project.npy"))


def test_peft_auto_class_without_lora_ft_gives_the_project_logits(run):
    np.testing.assert_allclose(np.load(run["tmp"] / "peft.npy"), np.load(run["tmp"] / "project.npy"), atol=1e-5)
    assert list(run["id2label"].values()) == run["labels"]


def test_pipeline_on_the_merged_export_predicts_as_predict(run):
    predicted = json.loads((run["tmp"] / "predict.json").read_text())
    served = [scores[0] for scores in run["pipeline"]]  # top_k=None sorts each text's classes by score
    assert [s["label"] for s in served] == [p["label"] for p in predicted]
    np.testing.assert_allclose([s["score"] for s in served], [p["score"] for p in predicted], atol=1e-3)


@pytest.mark.parametrize("folder,library", [("adapter", "peft"), ("merged", "transformers")])
def test_model_cards_carry_metadata_results_and_baselines(run, folder, library):
    card = ModelCard.load(run[folder] / "README.md")
    record = json.loads((run["root"] / "results" / "lora.json").read_text())
    assert card.data.library_name == library and card.data.base_model == HUB_ID
    assert card.data.pipeline_tag == "text-classification" and card.data.license is None  # unknown for this base
    scores = {r.metric_type: r.metric_value for r in card.data.eval_results}
    metrics = record["metrics"]
    assert scores == {"accuracy": round(metrics["accuracy"], 4), "f1": round(metrics["f1_macro"], 4)}
    text = card.text
    for row in ("this model (LoRA)", "majority class", "TF-IDF + logistic regression", *run["labels"]):
        assert f"| {row} |" in text
    assert "[More Information Needed]" not in text and str(run["tmp"]) not in text


def test_export_step_writes_a_merged_model_pipeline_can_serve(run):
    exported = run["tmp"] / "exported"
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in exported.iterdir()}
    config = json.loads((exported / "config.json").read_text())
    assert list(config["id2label"].values()) == run["labels"]
    assert config["label2id"] == {label: i for i, label in enumerate(run["labels"])}
    assert json.loads((exported / "tokenizer_config.json").read_text())["model_max_length"] == 32


def test_a_labelled_file_scored_through_the_cli_gets_the_test_records_scores(run):
    """The test split written as a user's csv and scored by `predict --input`: the same examples, accuracy,
    macro-F1 and confusion matrix as the record train wrote, with its training section."""
    scored = json.loads((run["root"] / "results" / "scored" / "scored-test.json").read_text())
    trained = json.loads((run["root"] / "results" / "lora.json").read_text())
    assert scored["split"] == "file" and scored["n_examples"] == trained["n_examples"] > 0
    assert scored["metrics"]["accuracy"] == pytest.approx(trained["metrics"]["accuracy"])
    assert scored["metrics"]["f1_macro"] == pytest.approx(trained["metrics"]["f1_macro"])
    assert scored["confusion_matrix"] == trained["confusion_matrix"]
    assert scored["train"] == trained["train"] and scored["params"] == trained["params"]
    out = pd.read_csv(run["tmp"] / "scored.csv")
    assert list(out.columns) == ["text", "label", "predicted", *(f"prob_{label}" for label in run["labels"])]
    assert (out["label"] == out["predicted"]).mean() == pytest.approx(trained["metrics"]["accuracy"])


def test_public_name_of_base_models(tmp_path):
    assert public_name(DEFAULT_MODEL) == DEFAULT_MODEL
    assert public_name(resolve_model(DEFAULT_MODEL)) == DEFAULT_MODEL  # the packaged copy, not what it names
    (tmp_path / "named").mkdir()
    (tmp_path / "named" / "config.json").write_text(json.dumps({"_name_or_path": "acme/encoder"}))
    assert public_name(str(tmp_path / "named")) == "acme/encoder"
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "config.json").write_text("{}")
    assert public_name(str(tmp_path / "own")) == str(tmp_path / "own")


def test_the_default_models_adapter_names_its_public_id(tmp_path):
    config = Config(smoke=True, output_root=str(tmp_path))
    model = add_lora(load_model(config.model, ["a", "b"], config.seed), config)
    save_adapter(model, load_tokenizer(config.model), config, ["a", "b"], config.paths.adapter)
    saved = json.loads((config.paths.adapter / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert not (config.paths.adapter / "README.md").exists()  # peft's empty template; train writes the real card
