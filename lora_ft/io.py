"""Atomic writes: each file or folder is built as `.<name>.<pid>-<random>.tmp` beside its target, then renamed onto
it, so a crash never leaves a half-written file; the next write of the target removes a killed one's temporary."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from .errors import ConfigError


@contextlib.contextmanager
def atomic_file(path: Path):
    """A temporary file beside path to write (the user's umask, not 0600), fsynced and renamed onto it, or removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    tmp.touch(exist_ok=False)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before the rename makes it the file
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"  # serialise first: a failure here touches nothing
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def replace_dir_atomic(build, target: Path) -> None:
    """Call build(tmp_dir) to fill a fresh folder, then swap it in place of target (a folder, or nothing yet):
    target becomes .<name>.old, deleted once the new folder is in place (restore_backup puts it back after a kill)."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} is a file, where a folder is to be written: move the file, or write the folder "
                          "somewhere else")
    target.parent.mkdir(parents=True, exist_ok=True)
    old = restore_backup(target)
    tmp = _temporary(target)
    tmp.mkdir()
    try:
        build(tmp)
        follow_umask(tmp)
        if old.exists():  # a stale backup left by a finished swap (target is in place, so it is not the only copy)
            shutil.rmtree(old)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def follow_umask(folder: Path) -> None:
    """Give folder and everything in it the user's umask modes (safetensors and tempfile make private ones)."""
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    for path in [Path(folder), *Path(folder).rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def restore_backup(target: Path) -> Path:
    """Put back target's .<name>.old backup when a kill between replace_dir_atomic's two renames left only it."""
    target = Path(target)
    old = target.with_name(f".{target.name}.old")
    if old.exists() and not target.exists():
        old.rename(target)
    return old


def _temporary(target: Path) -> Path:
    """A new temporary name beside target, after removing the ones that killed writes of target left."""
    started = time.time()
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)-[0-9a-f]{{8}}\.tmp")
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        found = pattern.fullmatch(stale.name)
        if found and not _running(int(found[1])) and stale.lstat().st_mtime < started:
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _running(pid: int) -> bool:
    """Whether a process pid runs on this machine (this one included: its own write may be in flight)."""
    try:
        os.kill(pid, 0)  # signal 0: only whether pid exists
    except (ProcessLookupError, OverflowError):  # no such process (a pid too large for the system is nobody's)
        return False
    except PermissionError:  # another user's
        return True
    return True


def check_writable(folder: Path) -> None:
    """A ConfigError now, before any work, if folder (or the first existing folder above it) cannot be written."""
    folder = Path(folder)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{existing} is a file, not a folder, so {folder} cannot be made: move the file, or write "
                          "elsewhere (output_root=..., or export --output)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ConfigError(f"cannot write in {existing} ({error.strerror}), where {folder} goes: make it writable "
                          f"(chmod u+w {existing}), or write elsewhere (output_root=..., or export --output)"
                          ) from None
