"""What a run costs: peak memory while a block runs, and the size of what it saved."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
from pathlib import Path

import psutil
import torch

MB = 1e6  # bytes; the README quotes sizes in decimal MB


def rss() -> int:
    """Resident memory of this process, in bytes."""
    return psutil.Process().memory_info().rss


@contextlib.contextmanager
def measure(interval: float = 0.02):
    """Yields a dict that gets, when the block ends, its peak memory above what the process held before, in MB:
    "peak_memory_mb" (resident, sampled every interval seconds) and on CUDA "peak_gpu_memory_mb"."""
    release_freed_memory()
    usage, start, peak, done = {}, rss(), [0], threading.Event()

    def sample():
        while not done.wait(interval):
            peak[0] = max(peak[0], rss())

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        gpu_start = torch.cuda.memory_allocated()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield usage
    finally:
        done.set()
        sampler.join()
        usage["peak_memory_mb"] = round((max(peak[0], rss(), start) - start) / MB, 1)
        if cuda:
            usage["peak_gpu_memory_mb"] = round((torch.cuda.max_memory_allocated() - gpu_start) / MB, 1)


def release_freed_memory() -> None:
    """Hand freed memory back to the system: glibc keeps it resident, and the measured block would reuse it unseen."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def folder_mb(path: Path) -> float:
    """Size on disk of every file under path, in MB."""
    return round(sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / MB, 3)
