"""Peak memory of a piece of work: this process and every process it started (servers, trainers, workers)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import threading
from dataclasses import dataclass

import psutil


@dataclass
class MemoryPeak:
    """Highest resident memory seen while sampling: `total_gb` of the whole process tree at one moment (an upper
    bound: pages a forked child shares are counted in both), and the largest single process with its name."""

    total_gb: float = 0.0
    process_gb: float = 0.0
    process: str = ""

    def as_dict(self) -> dict[str, float | str]:
        return {"peak_rss_gb": round(self.total_gb, 2), "peak_process_rss_gb": round(self.process_gb, 2), "peak_process": self.process}


class PeakMemorySampler:
    """`with PeakMemorySampler() as peak:` samples every `interval_s` in a daemon thread; `peak` holds the result.

    Sampling, not the kernel's high-water marks: a child's ru_maxrss is known only once it has been waited for,
    and the servers a stage starts outlive it."""

    def __init__(self, interval_s: float = 0.5):
        self.interval_s = interval_s
        self.peak = MemoryPeak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="webdancer-memory")

    def sample(self) -> None:
        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                rss, name = proc.memory_info().rss, _label(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            total += rss
            if rss / 2**30 > self.peak.process_gb:
                self.peak.process_gb, self.peak.process = rss / 2**30, name
        self.peak.total_gb = max(self.peak.total_gb, total / 2**30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> MemoryPeak:
        self.sample()
        self._thread.start()
        return self.peak

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def _label(proc: psutil.Process) -> str:
    """What a person recognises a process by: the module or script a Python runs (`webdancer_models.batched_server`,
    `llamafactory-cli`, `accelerate`), else the executable's name."""
    import os

    cmd = proc.cmdline()
    if cmd and os.path.basename(cmd[0]).startswith("python"):
        if "-m" in cmd[:-1]:
            return cmd[cmd.index("-m") + 1]
        if len(cmd) > 1 and not cmd[1].startswith("-"):
            return os.path.basename(cmd[1])
    return proc.name()


def release_freed_memory() -> None:
    """Give the memory Python and torch have freed back to the system: glibc keeps freed heap pages of a process for
    reuse, so a trainer that builds and drops a generation engine every step grows by what the last one left behind
    (the quickstart's RL trainer: 7.8 GB at its peak without this). No-op off glibc."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.lru_cache(maxsize=1)
def _libc():
    """The C library when it is glibc (it has malloc_trim), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None
