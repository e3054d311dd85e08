"""Atomic writes honour the user's umask, a kill loses nothing and leaves nothing for good (not between
replace_dir_atomic's two renames, not in the middle of a write), and every writer of the package goes through them."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from test_model_families import LABELS, save_tiny_model, tiny_config, tokenized_splits

from lora_ft import ConfigError, io, plots
from lora_ft.modeling import add_lora, load_model, load_tokenizer
from lora_ft.provenance import WriteFingerprint
from lora_ft.training import build_trainer


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_and_folders_follow_the_umask(tmp_path, umask_022):
    io.write_json_atomic(tmp_path / "record.json", {"a": 1})
    assert mode(tmp_path / "record.json") == 0o644

    def build(folder):
        io.write_json_atomic(folder / "labels.json", ["a", "b"])
        (folder / "weights.bin").write_bytes(b"0")
        os.chmod(folder / "weights.bin", 0o600)  # as safetensors writes its files
        (folder / "sub").mkdir(mode=0o700)

    io.replace_dir_atomic(build, tmp_path / "adapter")
    folder = tmp_path / "adapter"
    assert mode(folder) == mode(folder / "sub") == 0o755
    assert mode(folder / "labels.json") == mode(folder / "weights.bin") == 0o644


def test_replace_dir_atomic_restores_its_backup(tmp_path):
    target, backup = tmp_path / "adapter", tmp_path / ".adapter.old"
    backup.mkdir()  # a kill between the two renames: the good copy is only in the backup
    (backup / "weights").write_text("good")
    assert io.restore_backup(target) == backup
    assert (target / "weights").read_text() == "good" and not backup.exists()

    def fail(folder):
        raise RuntimeError("the build fails")

    target.rename(backup)  # killed again; this time the next write fails: the good copy must still be in place
    with pytest.raises(RuntimeError):
        io.replace_dir_atomic(fail, target)
    assert (target / "weights").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]

    io.replace_dir_atomic(lambda folder: (folder / "weights").write_text("new"), target)
    assert (target / "weights").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_atomic_file_follows_the_umask_and_leaves_nothing_on_failure(tmp_path, umask_022):
    with io.atomic_file(tmp_path / "out.txt") as tmp:
        tmp.write_text("x")
    assert mode(tmp_path / "out.txt") == 0o644
    with pytest.raises(RuntimeError), io.atomic_file(tmp_path / "out.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed midway")
    assert (tmp_path / "out.txt").read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_killed_writes_temporary_is_removed_by_the_next_write_of_the_same_target(tmp_path):
    """A kill during an export leaves .lora-merged.<pid>-<hex>.tmp; the next export removes it, and nothing else:
    not a live process's (a write in flight), not another target's, not a name of another pattern."""
    killed = tmp_path / f".lora-merged.{dead_pid()}-0123abcd.tmp"
    (killed / "sub").mkdir(parents=True)
    live = tmp_path / f".lora-merged.{os.getppid()}-0123abcd.tmp"
    live.mkdir()
    others = [tmp_path / f".lora-adapter.{dead_pid()}-0123abcd.tmp", tmp_path / ".lora-merged.notes.tmp"]
    for path in others:
        path.mkdir()
    io.replace_dir_atomic(lambda folder: (folder / "weights").write_text("new"), tmp_path / "lora-merged")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["lora-merged", live.name, *(p.name for p in others)])

    stale_file = tmp_path / f".record.json.{dead_pid()}-89abcdef.tmp"  # atomic_file's, the same rule
    stale_file.write_text("{")
    io.write_json_atomic(tmp_path / "record.json", {"a": 1})
    assert not stale_file.exists() and json.loads((tmp_path / "record.json").read_text()) == {"a": 1}


def test_replace_dir_atomic_refuses_a_file_where_the_folder_goes(tmp_path):
    target = tmp_path / "lora-merged"
    target.write_text("my notes")
    with pytest.raises(ConfigError, match="lora-merged is a file, where a folder is to be written"):
        io.replace_dir_atomic(lambda folder: (folder / "weights").write_text("new"), target)
    assert target.read_text() == "my notes" and sorted(p.name for p in tmp_path.iterdir()) == ["lora-merged"]


def test_a_figure_that_fails_midway_leaves_the_previous_one_and_no_temporary(tmp_path, umask_022):
    figure = plt.figure()
    path = plots.save(figure, tmp_path, "curve")
    assert path.read_bytes().startswith(b"\x89PNG") and mode(path) == 0o644
    before = path.read_bytes()

    def fail(target, **options):
        Path(target).write_bytes(b"\x89PNG half")
        raise RuntimeError("killed midway")

    figure.savefig = fail
    with pytest.raises(RuntimeError):
        plots.save(figure, tmp_path, "curve")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["curve.png"]
    plt.close(figure)


def test_checkpoint_files_follow_the_umask(tmp_path, umask_022):
    """The Trainer's checkpoints hold safetensors weights, which safetensors writes 0600 whatever the umask; the
    fingerprint written into each checkpoint (provenance.WriteFingerprint) gives it the user's modes."""
    config = tiny_config(save_tiny_model("bert", tmp_path / "base"), tmp_path)
    tokenizer = load_tokenizer(config.model)
    model = add_lora(load_model(config.model, LABELS, config.seed), config)
    trainer = build_trainer(config, model, tokenizer, tokenized_splits(tokenizer), max_steps=1, save_strategy="steps",
                            save_steps=1, eval_strategy="no", load_best_model_at_end=False, disable_tqdm=True)
    trainer.add_callback(WriteFingerprint({"settings": {}}))
    trainer.train()
    checkpoint = config.paths.checkpoints / "checkpoint-1"
    assert (checkpoint / "adapter_model.safetensors").is_file()
    assert {p.name: mode(p) for p in checkpoint.iterdir()} == {p.name: 0o644 for p in checkpoint.iterdir()}
    assert mode(checkpoint) == 0o755
