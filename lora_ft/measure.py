"""What a run costs: peak memory while a block runs, and the size of what it saved."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import threading
from pathlib import Path

import torch

MB = 1e6  # bytes; the README quotes sizes in decimal MB

try:
    import psutil

    def rss() -> int:
        """Resident memory of this process, in bytes."""
        return psutil.Process().memory_info().rss
except ImportError:
    def rss() -> int:
        """Resident memory of this process, in bytes (Linux, without psutil)."""
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def measure(interval: float = 0.02):
    """Peak memory of the process while the block runs, above what it held before, in MB.

    Yields a dict that gets "peak_memory_mb" (resident memory, sampled every interval seconds) when the block
    ends, and "peak_gpu_memory_mb" (torch.cuda.max_memory_allocated) on CUDA.
    """
    _release_freed_memory()
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


def _release_freed_memory() -> None:
    """Hand memory that earlier steps freed back to the system: glibc keeps it resident and would serve the
    measured block from it unseen (after a full fine-tune, a 200 MB array then adds nothing to the resident size)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def folder_mb(path: Path) -> float:
    """Size on disk of every file under path, in MB."""
    return round(sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / MB, 3)
