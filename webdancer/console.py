"""What a command prints: its own lines, third-party libraries only when asked (`-v`), no colour where none belongs.

One verbosity for the whole command, set once by the CLI: -1 (`--quiet`: warnings, errors and the closing
summary), 0 (default: one line per stage and the summary), 1 (`-v`: our info logging), 2 (`-vv`: debug, and
what trackers and libraries print: banners, download and weight-loading bars)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
from typing import Iterator

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_verbosity = 0


class _Once(logging.Filter):
    """Each warning template once per logger (a retry warned about 200 times reads as one line); `-v` shows all."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or _verbosity >= 1:
            return True
        key = (record.name, str(record.msg))
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def configure(verbosity: int) -> None:
    """Set the command's verbosity; below -vv, libraries' progress bars and banners are off in this process and in
    every process it starts (trainers, servers), through the variables those libraries read."""
    global _verbosity
    _verbosity = verbosity
    level = {-1: logging.WARNING, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        if not any(isinstance(f, _Once) for f in handler.filters):
            handler.addFilter(_Once())
    if verbosity < 2:
        for name, value in (("TQDM_DISABLE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                            ("TRACKIO_LOG_LEVEL", "error")):
            os.environ.setdefault(name, value)


def verbosity() -> int:
    return _verbosity


def echo(line: str) -> None:
    """A progress line of ours (a stage started, finished): shown unless `--quiet`."""
    if _verbosity >= 0:
        print(line, flush=True)


def summary(line: str) -> None:
    """The closing line(s) of a command (where the results are): shown even with `--quiet`."""
    print(line, flush=True)


def colour_allowed(stream: io.TextIOBase | None = None) -> bool:
    """Colour only on a terminal and only when NO_COLOR is unset (https://no-color.org)."""
    stream = stream or sys.stdout
    return not os.environ.get("NO_COLOR") and hasattr(stream, "isatty") and stream.isatty()


def plain(text: str) -> str:
    """`text` without terminal escape codes."""
    return _ANSI.sub("", text)


class _Router(io.TextIOBase):
    """sys.stdout/sys.stderr while a `library_output` block runs: writes from a thread inside such a block go to its
    buffer, every other thread's to the stream as before (a training progress line is never swallowed)."""

    def __init__(self, original):
        self.original = original

    def write(self, text: str) -> int:
        buffer = getattr(_captured, "buffer", None)
        return (buffer if buffer is not None else self.original).write(text)

    def flush(self) -> None:
        self.original.flush()

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")


_captured = threading.local()
_routing = {"blocks": 0}
_routing_lock = threading.Lock()


@contextlib.contextmanager
def library_output(name: str) -> Iterator[None]:
    """What a library prints to stdout or stderr from this thread inside this block (trackio's banners) becomes debug
    logging of `webdancer.<name>`, escape codes removed: shown with -vv, never mixed into the command's output."""
    with _routing_lock:
        if _routing["blocks"] == 0:
            sys.stdout, sys.stderr = _Router(sys.stdout), _Router(sys.stderr)
        _routing["blocks"] += 1
    outer = getattr(_captured, "buffer", None)
    buffer = _captured.buffer = io.StringIO()
    try:
        yield
    finally:
        _captured.buffer = outer
        with _routing_lock:
            _routing["blocks"] -= 1
            if _routing["blocks"] == 0:
                for attr in ("stdout", "stderr"):
                    stream = getattr(sys, attr)
                    if isinstance(stream, _Router):  # unless someone replaced it meanwhile
                        setattr(sys, attr, stream.original)
        logger = logging.getLogger(f"webdancer.{name}")
        for line in plain(buffer.getvalue()).splitlines():
            if line.strip():
                logger.debug("%s", line.strip())


class Progress:
    """Done out of total for long work: a live bar on a terminal, else one line at each tenth (a log file reads as a
    story, not as thousands of redraws); nothing with `--quiet`. `with Progress("sample", 120) as bar: bar.update(n)`."""

    def __init__(self, what: str, total: int, indent: str = "   "):
        self.what, self.total, self.indent = what, max(int(total), 0), indent
        self._shown_tenth = -1
        self._live = None
        self._task = None
        self._last = (0, "")

    def __enter__(self) -> "Progress":
        if _verbosity >= 0 and self.total and colour_allowed(sys.stdout):
            from rich import progress as rich

            self._live = rich.Progress(rich.TextColumn(f"{self.indent}{self.what}"), rich.BarColumn(), rich.MofNCompleteColumn(),
                                       rich.TimeElapsedColumn(), rich.TimeRemainingColumn(), rich.TextColumn("{task.description}"),
                                       transient=True)
            self._live.start()
            self._task = self._live.add_task("", total=self.total)
        return self

    def update(self, done: int, note: str = "", total: int | None = None) -> None:
        """`total`: a better count learnt on the way (a trainer's own planned steps)."""
        if total:
            self.total = int(total)
        self._last = (done, note)
        if _verbosity < 0 or not self.total:
            return
        if self._live is not None:
            self._live.update(self._task, completed=done, total=self.total, description=note)
            return
        tenth = min(10, done * 10 // self.total)
        if tenth > self._shown_tenth and tenth > 0:
            self._shown_tenth = tenth
            print(f"{self.indent}{self.what}: {done}/{self.total} ({tenth * 10} %){'  ' + note if note else ''}", flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            done, note = self._last
            print(f"{self.indent}{self.what}: {done}/{self.total}{'  ' + note if note else ''}", flush=True)
