"""`python -m lora_ft`: typed settings from files and key=value, one-line errors, and a small real run."""

import contextlib
import dataclasses
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TRAINER  # what conftest.small_run trains with
from lora_ft import Config, cli, results
from lora_ft.cli import STEPS, main, make_config, parse_overrides, read_config_file
from lora_ft.measure import folder_mb

SMALL = ["train_size=64", "eval_size=32", "epochs=1"]
LABELS = ["negative", "neutral", "positive"]
BASELINES = ("majority", "pretrained-baseline", "tfidf-logreg", "linear-probe", "full-finetune")


def run(argv) -> tuple[int, str]:
    """main(argv)'s exit status and what it printed on stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(argv)
    return status, out.getvalue()


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("step", STEPS)
def test_help_of_every_step_lists_every_setting_with_its_help(capsys, step):
    with pytest.raises(SystemExit) as done:
        main([step, "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(Config):
        assert field.metadata.get("help"), f"Config.{field.name} has no help text"
        assert f" {field.name}: {field.type}" in out and " ".join(field.metadata["help"].split()) in out


def test_overrides_are_parsed_with_each_settings_type():
    settings = parse_overrides(["r=4", "alpha=32", "dropout=0", "labels=negative,positive",
                                "target_modules=query, value", "train_size=None", "text_column=null",
                                "trust_remote_code=true", "smoke=False", "dataset=reviews=2024.csv"])
    assert settings == {"r": 4, "alpha": 32.0, "dropout": 0.0, "labels": ("negative", "positive"),
                        "target_modules": ("query", "value"), "train_size": None, "text_column": None,
                        "trust_remote_code": True, "smoke": False, "dataset": "reviews=2024.csv"}
    assert type(settings["r"]) is int and type(settings["alpha"]) is float
    assert Config(**settings).labels == ("negative", "positive")


@pytest.mark.parametrize("word, named", [
    ("rank=4", "unknown setting(s) ['rank']"),
    ("r=abc", "r='abc' is not an integer"),
    ("train_size=x", "train_size='x' is not an integer or None"),
    ("trust_remote_code=yes", "trust_remote_code='yes' is not true or false"),
    ("alpha=None", "alpha='None' is not a number"),
    ("r=-1", "r=-1 is invalid"),
    ("r", "write settings as key=value"),
])
def test_bad_settings_are_one_line_errors_naming_the_setting(capsys, word, named):
    assert main(["train", word]) == 2
    assert named in one_line_error(capsys)


def test_config_files_json_and_yaml_then_overrides_on_top(tmp_path, capsys):
    (tmp_path / "run.json").write_text(json.dumps({"r": 4, "alpha": 8, "labels": ["negative", "positive"],
                                                   "train_size": None, "trust_remote_code": False}))
    (tmp_path / "run.yaml").write_text("r: 4\nalpha: 8\nlabels: [negative, positive]\ntrain_size: null\n"
                                       "trust_remote_code: false\nlearning_rate: 5e-4\ntarget_modules: query,value\n")
    from_json, from_yaml = read_config_file(tmp_path / "run.json"), read_config_file(tmp_path / "run.yaml")
    assert from_json == {"r": 4, "alpha": 8.0, "labels": ("negative", "positive"), "train_size": None,
                         "trust_remote_code": False}
    # YAML reads 5e-4 as text and JSON 8 as an integer: each value takes its setting's type
    assert from_yaml == {**from_json, "learning_rate": 5e-4, "target_modules": ("query", "value")}
    config = make_config("prepare", tmp_path / "run.yaml", parse_overrides(["r=16", f"output_root={tmp_path}"]))
    assert (config.r, config.alpha, config.learning_rate, config.labels) == (16, 8.0, 5e-4, ("negative", "positive"))

    for name, text, named in [("bad.json", '{"rank": 4}', "unknown setting(s) ['rank'] in"),
                              ("bad.yaml", "r: four\n", "r='four' is not an integer"),
                              ("bad.yml", "- r\n", "not a mapping"),
                              ("bad.json", "{r: 4", "cannot read config file"),
                              ("bad.toml", "r = 4\n", "is not .json, .yaml or .yml")]:
        (tmp_path / name).write_text(text)
        assert main(["prepare", "--config", str(tmp_path / name)]) == 2
        assert named in one_line_error(capsys)


@pytest.fixture(scope="module")
def trained(copy_of_small_run):
    """A small prepare then `train --resume` (conftest.small_run), in this module's own root, and what train
    printed."""
    return copy_of_small_run


def test_train_reads_the_prepared_settings_back_and_saves_adapter_and_record(trained):
    root, out = trained
    assert "no checkpoint in" in out and "training from the start" in out
    adapter = root / "model" / "lora-adapter"
    assert {"adapter_model.safetensors", "labels.json", "lora_ft_config.json"} <= {p.name for p in adapter.iterdir()}
    assert json.loads((adapter / "labels.json").read_text()) == LABELS
    record = results.load_all(root / "results")["lora"]
    assert record["config"]["train_size"] == 64 and record["n_examples"] == 32 and record["train"]["epochs"] == 1
    assert f"lora: accuracy {record['metrics']['accuracy']:.4f}" in out
    # measured as the baselines are: the saved folder as it is on disk, the peak at least the model's fp32 weights
    assert record["resources"]["saved_mb"] == folder_mb(adapter) > 0
    assert record["resources"]["peak_memory_mb"] >= 4 * record["params"]["total"] / 1e6


def test_baseline_writes_every_reference_run_with_what_it_cost(trained):
    root, _ = trained  # its lora record is the fixture's training, not yet test_resume_...'s resumed one
    status, out = run(["baseline", "--no-full-finetune", f"output_root={root}"])
    assert status == 0 and "full-finetune" not in out and not (root / "results" / "full-finetune.json").exists()
    status, out = run(["baseline", f"output_root={root}"])
    records = results.load_all(root / "results")
    assert status == 0 and all(f"{name}: accuracy" in out for name in BASELINES)
    for name in BASELINES:
        record = records[name]
        assert record["n_examples"] == 32 and record["config"]["train_size"] == 64
        assert 0 <= record["metrics"]["accuracy"] <= 1 and 0 <= record["metrics"]["f1_macro"] <= 1
        saved = root / "model" / name
        assert record["resources"]["saved_mb"] == (folder_mb(saved) if saved.exists() else 0)
    assert records["majority"]["resources"]["saved_mb"] == records["pretrained-baseline"]["resources"]["saved_mb"] == 0

    full, lora, untrained = records["full-finetune"], records["lora"], records["pretrained-baseline"]
    assert full["params"]["trainable"] == full["params"]["total"] == untrained["params"]["total"]
    assert full["config"]["learning_rate"] == 5e-5 and full["train"]["epochs"] == 1
    assert lora["params"]["trainable"] < full["params"]["trainable"] / 40  # 2.1%: every linear layer, the head
    # LoRA saves an adapter and a head (plus the tokenizer, as the full model does); a full fine-tune a whole model
    assert full["resources"]["saved_mb"] >= 4 * full["params"]["total"] / 1e6 > 30 * lora["resources"]["saved_mb"]
    # a full fine-tune also holds a gradient and two AdamW moments for every weight
    assert full["resources"]["peak_memory_mb"] > lora["resources"]["peak_memory_mb"]


def test_predict_prints_a_known_label_per_text(trained, tmp_path, capsys):
    root, _ = trained
    texts = ["I love this airline, the crew was wonderful!", "Worst service ever, my bag is lost."]
    status, out = run(["predict", f"output_root={root}", *texts])
    lines = out.splitlines()
    assert status == 0 and len(lines) == 2
    for line, text in zip(lines, texts):
        label, score, echoed = line.split("\t")
        assert label in LABELS and 1 / 3 <= float(score) <= 1 and echoed == text

    (tmp_path / "texts.txt").write_text(f"{texts[0]}\n\n  {texts[1]}  \n")
    status, out = run(["predict", "--json", "--file", str(tmp_path / "texts.txt"),
                       "--adapter", str(root / "model" / "lora-adapter")])
    rows = json.loads(out)
    assert status == 0 and [row["text"] for row in rows] == texts
    assert [row["label"] for row in rows] == [line.split("\t")[0] for line in lines]

    assert main(["predict", f"output_root={tmp_path}", "some text"]) == 2
    assert "no saved adapter in" in one_line_error(capsys)
    assert main(["predict", f"output_root={root}"]) == 2
    assert "no texts to classify" in one_line_error(capsys)


def test_evaluate_reloads_the_adapter_and_matches_the_trained_record(trained):
    root, _ = trained
    status, out = run(["evaluate", f"output_root={root}"])
    records = results.load_all(root / "results")
    assert status == 0 and "same confusion matrix as the record of the trained model: yes" in out
    assert records["lora-reloaded"]["metrics"] == records["lora"]["metrics"]
    assert records["lora-reloaded"]["train"] == records["lora"]["train"]
    assert records["lora-reloaded"]["resources"] == records["lora"]["resources"]  # what training cost, carried over


def test_resume_continues_from_the_last_checkpoint(trained):
    root, _ = trained
    before = results.load_all(root / "results")["lora"]
    status, out = run(["train", "--resume", TRAINER, f"output_root={root}"])  # small_run's settings
    after = results.load_all(root / "results")["lora"]
    assert status == 0 and f"resuming from {root / 'model' / 'checkpoints' / 'checkpoint-'}" in out
    # the Trainer keeps only the best checkpoint of a finished run, so the steps after it are trained again: the same
    # losses and scores, in their own time
    assert untimed(after["train"]["history"]) == untimed(before["train"]["history"])
    assert after["metrics"] == before["metrics"]


def untimed(history: list[dict]) -> list[dict]:
    """history without the Trainer's timings, which differ from run to run."""
    timing = ("_runtime", "_per_second")
    return [{k: v for k, v in entry.items() if not k.endswith(timing)} for entry in history]


def test_a_moved_output_root_resumes_and_keeps_its_checkpoint(trained, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(trained[0], moved)  # the Trainer's state still names the checkpoint in the old root
    status, out = run(["train", "--resume", TRAINER, f"output_root={moved}"])
    assert status == 0 and f"resuming from {moved / 'model' / 'checkpoints'}" in out
    assert [p.name for p in (moved / "model" / "checkpoints").iterdir()] == ["checkpoint-2"]  # not rotated away


def test_sweep_writes_its_records(trained):
    root, _ = trained
    assert run(["sweep", "--ranks", "2", "--alpha-ratios", "2", "--extra-targets", "none", "--train-size", "32",
                f"output_root={root}"])[0] == 0
    records = results.load_all(root / "results")
    point = records["sweep-query-value-r2-alpha4"]["config"]
    assert (point["r"], point["alpha"], point["train_size"]) == (2, 4.0, 32)


def test_the_module_runs_as_a_program(trained, tmp_path):
    root, _ = trained

    def program(*argv):
        return subprocess.run([sys.executable, "-m", "lora_ft", *argv], capture_output=True, text=True, cwd=tmp_path)

    done = program("predict", f"output_root={root}", "The flight to Boston departs at 9am.")  # one process
    assert done.returncode == 0, done.stderr
    label, _, text = done.stdout.strip().split("\t")
    assert label in LABELS and text == "The flight to Boston departs at 9am."


def snapshot(root) -> dict:
    """Every file under root with its bytes: what a failed command must leave exactly as it was."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("words, named", [
    (["precision=fp16"], "precision='fp16' needs a CUDA GPU"),
    (["quantize_4bit=true"], "quantize_4bit needs"),
    (["target_modules=nosuchlayer"], "target_modules ['nosuchlayer'] are not linear layers of bert"),
    (["modules_to_save=nosuch"], "modules_to_save ['nosuch'] are not modules of bert"),
    (["--resume", "r=16"], "was made by another run (r 8 there, 16 now)"),
])
def test_failed_train_does_not_save_its_settings(trained, capsys, words, named):
    root, _ = trained
    before = snapshot(root)
    assert main(["train", *words, f"output_root={root}"]) == 2
    assert named in one_line_error(capsys)
    assert snapshot(root) == before  # the next plain command starts from the settings it started from


def save_model_folder(folder, weights: bool = True):
    """A tiny random BERT and the default tokenizer, as a local model folder; weights as pickle only."""
    import torch
    from transformers import AutoModel, BertConfig

    from lora_ft.config import DEFAULT_MODEL
    from lora_ft.modeling import load_tokenizer

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    tokenizer.save_pretrained(folder)
    model = AutoModel.from_config(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64))
    model.config.save_pretrained(folder)
    if weights:
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def test_bin_only_model_is_refused_before_anything_is_written(trained, tmp_path, capsys):
    root, _ = trained
    before = snapshot(root)
    folder = save_model_folder(tmp_path / "pickled")
    assert main(["train", f"model={folder}", f"output_root={root}"]) == 2
    assert "pytorch_model.bin" in (err := one_line_error(capsys)) and "load from safetensors only" in err
    assert snapshot(root) == before


def test_model_needing_its_own_code_is_a_line_not_a_traceback(trained, tmp_path, capsys):
    root, _ = trained
    before = snapshot(root)
    folder = save_model_folder(tmp_path / "custom", weights=False)
    (folder / "config.json").write_text(json.dumps({"model_type": "my-model", "auto_map": {
        "AutoConfig": "configuration_my.MyConfig", "AutoModelForSequenceClassification": "modeling_my.MyModel"}}))
    assert main(["prepare", f"model={folder}", f"output_root={root}"]) == 2
    assert "ships its own code, which runs only with trust_remote_code=true" in one_line_error(capsys)
    assert snapshot(root) == before


def test_evaluate_never_rewrites_prepared_data(trained, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(trained[0], root)
    assert run(["prepare", f"output_root={root}", *SMALL, "labels=negative,positive"])[0] == 0
    before = snapshot(root)
    assert main(["evaluate", f"output_root={root}"]) == 2
    err = one_line_error(capsys)
    assert "is not what the adapter" in err and "labels None for the adapter, ['negative', 'positive'] prepared" in err
    assert snapshot(root) == before  # the user's 2-class preparation is still there


def test_options_and_settings_mix_in_any_order(trained):
    root, _ = trained
    adapter = root / "model" / "lora-adapter"
    status, out = run(["predict", "great crew", "--adapter", str(adapter), f"output_root={root}", "--json"])
    assert status == 0 and json.loads(out)[0]["text"] == "great crew"
    args = cli.parse_args(["train", "epochs=1", "--resume", f"output_root={root}"])
    assert args.resume and args.settings == ["epochs=1", f"output_root={root}"]


def test_predict_refuses_a_blank_text(trained, capsys):
    root, _ = trained
    assert main(["predict", f"output_root={root}", "fine", "  "]) == 2
    assert "text(s) number [2] are blank" in one_line_error(capsys)


@pytest.mark.parametrize("fingerprint", [True, False])
def test_adapter_labels_disagreeing_with_weights_is_refused(trained, tmp_path, capsys, fingerprint):
    adapter = tmp_path / "adapter"
    shutil.copytree(trained[0] / "model" / "lora-adapter", adapter)
    (adapter / "labels.json").write_text(json.dumps(["negative", "positive"]))
    if not fingerprint:  # an adapter saved before fingerprints: its weights still tell
        (adapter / "lora_ft_fingerprint.json").unlink()
    assert main(["predict", "--adapter", str(adapter), "some text"]) == 2
    err = one_line_error(capsys)
    assert ("labels ['negative', 'neutral', 'positive'] there, ['negative', 'positive'] now" in err if fingerprint
            else "for 3 classes" in err and "labels.json 2 classes" in err)


def test_adapter_with_an_edited_rank_is_refused(trained, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    shutil.copytree(trained[0] / "model" / "lora-adapter", adapter)
    settings = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**settings, "r": 16}))
    assert main(["predict", "--adapter", str(adapter), "some text"]) == 2
    assert "weights of rank [8]" in one_line_error(capsys)


def test_gpu_check_script_stops_at_once_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without CUDA")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert done.returncode == 2 and "no CUDA GPU here" in done.stderr and "===" not in done.stdout
