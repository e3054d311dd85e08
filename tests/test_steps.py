"""One path per run: notebook 03 and `python -m lora_ft train` leave the same files, and the settings one step is
given stay that step's (the prepared data keeps only its own)."""

import json

import nbformat
import pytest
from nbclient import NotebookClient

from lora_ft import Config, cli, pipeline
from lora_ft.config import DATA_FIELDS, ROOT

SMALL = {"train_size": 48, "eval_size": 32}  # a few seconds of training in small mode


def files(root) -> list[str]:
    """What a run left under model/ and results/, as paths relative to root (checkpoints by name only)."""
    return sorted(str(p.relative_to(root)) for folder in ("model", "results") for p in (root / folder).rglob("*")
                  if p.is_file())


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """`train` from the command line, then `baseline` on the same root."""
    root = tmp_path_factory.mktemp("cli")
    words = [f"{k}={v}" for k, v in SMALL.items()]
    assert cli.main(["prepare", f"output_root={root}", *words]) == 0
    prepared = (root / "data" / "prepared" / "config.json").read_text()
    # settings that change training, not the data: the next step must not inherit them
    assert cli.main(["train", f"output_root={root}", "weight_decay=0.05", "warmup=0.2", "r=4"]) == 0
    trained = files(root)
    assert cli.main(["baseline", f"output_root={root}"]) == 0
    return root, prepared, trained


def test_the_prepared_data_keeps_only_its_own_settings(cli_run):
    root, prepared, _ = cli_run
    assert set(json.loads(prepared)) == set(DATA_FIELDS)
    assert (root / "data" / "prepared" / "config.json").read_text() == prepared  # train and baseline left it alone


def test_baseline_after_train_trains_with_the_datas_settings_not_trains(cli_run):
    root = cli_run[0]
    lora = json.loads((root / "results" / "lora.json").read_text())["config"]
    full = json.loads((root / "results" / "full-finetune.json").read_text())["config"]
    assert (lora["weight_decay"], lora["warmup"], lora["r"]) == (0.05, 0.2, 4)
    defaults = Config()
    assert (full["weight_decay"], full["warmup"], full["r"]) == (defaults.weight_decay, defaults.warmup, defaults.r)
    assert {k: full[k] for k in DATA_FIELDS} == {k: lora[k] for k in DATA_FIELDS}


def test_notebook_03_leaves_the_files_the_train_step_leaves(cli_run, tmp_path):
    trained = cli_run[2]
    # notebook 03 starts from the data notebook 01 prepares in this mode's folder (prepared as notebook 01 does it)
    pipeline.prepare(Config())
    path = ROOT / "notebooks" / "03_lora_training.ipynb"
    notebook = nbformat.read(path, as_version=4)
    parameters = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    overrides = dict(output_root=str(tmp_path), **SMALL, weight_decay=0.05, warmup=0.2, r=4)
    parameters.source = f"overrides = {overrides!r}"
    NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
    assert files(tmp_path) == trained
