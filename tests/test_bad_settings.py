"""Validate, then act, then save: a bad value or an unwritable folder is refused with one line before anything is
written, whatever was there stays byte for byte, and the plain command run afterwards succeeds."""

import hashlib
import shutil

import pytest

from conftest import TRAINER  # what conftest.small_run trains with
from lora_ft import cli

SMALL = ["train_size=48", "eval_size=32"]
UNWRITABLE = "/sys/lora-ft-test"  # a folder even root cannot create


def state(root) -> dict[str, str]:
    """A digest of every file under root: what a refused command must leave unchanged."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(copy_of_small_run):
    """A root with prepared data, a trained adapter, its record and merged export (conftest.small_run)."""
    return copy_of_small_run[0]


def refused(capsys, *argv) -> str:
    """The one line a refused command prints (exit status 2)."""
    assert cli.main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and ": " in err[7:], err
    return err


# issue 31, cases 2 and 5: non-finite, negative or huge values, and values that pass a type check but fail later
BAD = ["learning_rate=inf", "alpha=nan", "seed=-5", "learning_rate=nan", "epochs=nan", "epochs=inf", "seed=1e20",
       "r=100000", "r=1000", "max_length=1", "max_length=2", "dropout=nan", "warmup=-0.1", "batch_size=0"]


def test_bad_values_are_refused_before_anything_is_replaced_and_a_plain_rerun_succeeds(trained, capsys):
    before = state(trained)
    for word in BAD:
        line = refused(capsys, "train", word, f"output_root={trained}")
        assert word.split("=")[0] in line, line
    assert state(trained) == before  # the good adapter, its record and the prepared data's settings are intact
    assert cli.main(["train", TRAINER, f"output_root={trained}"]) == 0  # nothing bad saved for the next run to inherit


def test_r_larger_than_the_models_width_is_refused_before_training(trained, capsys):
    line = refused(capsys, "train", "r=1000", f"output_root={trained}")
    assert "384" in line and "set r to at most 384" in line


@pytest.mark.parametrize("step", ["prepare", "baseline", "train"])
def test_an_output_root_that_cannot_be_written_is_refused_first(step, capsys):
    line = refused(capsys, step, *SMALL, f"output_root={UNWRITABLE}")
    assert "cannot write in /sys" in line and "output_root=" in line


def test_an_output_root_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    line = refused(capsys, "prepare", *SMALL, f"output_root={tmp_path / 'file'}")
    assert "is a file, not a folder" in line


def test_train_with_results_unwritable_fails_before_training_and_keeps_the_adapter(trained, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(trained, root)
    shutil.rmtree(root / "results")
    (root / "results").write_text("a file where the records go")
    before = state(root / "model")
    line = refused(capsys, "train", f"output_root={root}")
    assert "results" in line and "is a file, not a folder" in line
    assert state(root / "model") == before  # no training happened: nothing under model/ changed


def test_evaluate_and_export_refuse_an_unwritable_target(trained, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(trained, root)
    shutil.rmtree(root / "results")
    (root / "results").write_text("a file where the records go")
    assert "is a file, not a folder" in refused(capsys, "evaluate", f"output_root={root}")
    assert "cannot write" in refused(capsys, "export", f"output_root={trained}", "--output", f"{UNWRITABLE}/merged")


def test_a_text_after_double_dash_is_a_text_even_when_it_looks_like_a_setting(trained, capsys):
    assert cli.main(["predict", f"output_root={trained}", "--", "seed=5 flights were great"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].endswith("\tseed=5 flights were great")
    assert "only predict reads texts" in refused(capsys, "train", f"output_root={trained}", "--", "r=4")
