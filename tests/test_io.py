"""Atomic writes honour the user's umask, and a kill between replace_dir_atomic's two renames loses nothing."""

import os
import stat

import pytest

from lora_ft import io


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
