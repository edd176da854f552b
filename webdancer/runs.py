"""What a run folder (`runs/<run>/`) holds once stages have written it: the models it trained, and where
rollouts that an outage ended are kept apart from the results."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Optional

from webdancer.errors import WebdancerError

# Newest first: RL's final model, then the SFT checkpoint.
TRAINED = (("rl/model", "after RL"), ("sft", "after SFT"))


def newest_model(run_dir: str | Path) -> Optional[tuple[Path, str]]:
    """The most trained model of a run folder and what it is ("after RL", "after SFT"), or None."""
    for sub, label in TRAINED:
        path = Path(run_dir) / sub
        if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
            return path, label
    return None


def outages_path(out: Path) -> Path:
    """Where the rollouts that an outage ended are recorded, beside the results (`out`) they are not part of."""
    return out.with_name(out.name.removesuffix(".jsonl") + ".outages.jsonl")


LOCK_FILE = ".webdancer.lock"
_held: dict[Path, int] = {}  # run folders this process holds -> the lock file's descriptor


@contextlib.contextmanager
def run_lock(run_dir: str | Path, what: str, wait_s: float = 30.0) -> Iterator[None]:
    """Hold `run_dir` as its only writer until the block ends: a second writer (a rerun while a trainer of a killed
    run still writes) is refused with the holder's PID, after `wait_s` for it to go (the children of a run killed a
    moment ago take a few seconds to stop). The lock is the kernel's (flock): it goes when the holder and every child
    it started with the lock (`run_logged`) have exited, however they died. Reentrant in one process."""
    import fcntl
    import time

    path = Path(run_dir).resolve()
    if path in _held:
        yield
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.5)
                continue
        holder = os.read(fd, 300).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise WebdancerError(f"{path} is being written by {holder} (or a trainer it started); wait for it to finish or stop "
                             "it, then run again (two writers would mix their checkpoints and results)") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"PID {os.getpid()} ({what})\n".encode())
    _held[path] = fd
    try:
        yield
    finally:
        del _held[path]
        os.close(fd)


def held_lock_fds() -> tuple[int, ...]:
    """The lock descriptors a child started now should inherit, so that the lock outlives this process while it runs."""
    return tuple(_held.values())
