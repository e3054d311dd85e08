"""Atomic writes: a crash never leaves a half-written file where a good one was; under several processes
(torchrun, accelerate launch) only the main one writes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"  # serialise first: a failure here touches nothing
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; an ordinary file follows the user's umask
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir_atomic(build, target: Path) -> None:
    """Call build(tmp_dir) to fill a fresh folder, then swap it in place of target.

    Two renames: target becomes .<name>.old, then the new folder becomes target. A kill between them leaves only
    the backup, which the next call (or restore_backup) puts back; the backup is deleted only once the new folder
    is in place.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    old = restore_backup(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        build(tmp)
        # mkdtemp makes 0700, and some writers (safetensors) 0600 files: what is swapped in follows the user's umask
        mask = _umask()
        for path in [tmp, *tmp.rglob("*")]:
            if not path.is_symlink():
                os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
        if old.exists():  # a stale backup left by a finished swap (target is in place, so it is not the only copy)
            shutil.rmtree(old)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def restore_backup(target: Path) -> Path:
    """Put back target's .<name>.old backup when a kill between replace_dir_atomic's two renames left only it."""
    target = Path(target)
    old = target.with_name(f".{target.name}.old")
    if old.exists() and not target.exists():
        old.rename(target)
    return old


def processes():
    """The processes the Trainer will use (accelerate's PartialState).

    On CPU, `accelerate launch --cpu` sets ACCELERATE_USE_CPU, which TrainingArguments reads and PartialState
    does not: without it a torchrun CPU process would think it ran alone.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def on_main_process(write, *args) -> None:
    """Run a write on the main process only, then hold every process until it is on disk."""
    state = processes()
    if state.is_main_process:
        write(*args)
    state.wait_for_everyone()
