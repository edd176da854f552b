"""Append-only JSONL with crash-safe resume, and atomic writes for whole files."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Optional, TypeVar

import orjson

from webdancer.errors import RecordError, StorageError
from webdancer.records import record_from_dict
from webdancer.typed import fields_of, to_dict

T = TypeVar("T")


def storage_error(path: Path, exc: OSError) -> StorageError:
    """One clear line for a write that the disk refused, saying that a rerun continues."""
    reason = exc.strerror or type(exc).__name__
    return StorageError(
        f"{path}: cannot write ({reason}); free disk space or make the folder writable, then rerun: "
        "every complete record is kept and the run continues from the last one"
    )


def json_bytes(obj: Any, *, newline: bool = False) -> bytes:
    """`obj` as compact UTF-8 JSON (a JSONL line with `newline`): always valid JSON, so jq, DuckDB or
    Arrow read our files, and any server our request bodies, as json.loads does.

    orjson writes it ~15x faster than json where objects carry long text (a 3 KB search result: 0.5
    vs 11 us, most of what recording a tool call cost; a model request with a whole trajectory in it
    is most of the agent loop's own CPU per call otherwise). NaN and infinities, which JSON lacks, are
    written as null (json.dumps wrote the non-JSON token NaN). What orjson refuses (int dict keys,
    integers past 64 bits) is written by json, as before. Dataclasses are written as `to_dict` writes
    them (every field, in order), one shallow dict per dataclass instead of a copy of the whole tree:
    orjson's own dataclass output would drop fields whose name starts with "_".
    """
    option = orjson.OPT_PASSTHROUGH_DATACLASS | (orjson.OPT_APPEND_NEWLINE if newline else 0)
    try:
        return orjson.dumps(obj, default=_dataclass_fields, option=option)
    except TypeError:  # orjson.JSONEncodeError included
        return (json.dumps(to_dict(obj), ensure_ascii=False) + ("\n" if newline else "")).encode("utf-8")


def _dataclass_fields(obj: Any) -> dict[str, Any]:
    fields = getattr(type(obj), "__dataclass_fields__", None)
    if fields is None:
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")
    return {name: getattr(obj, name) for name in fields_of(type(obj))}


def json_line(obj: Any) -> bytes:
    """One JSONL line (see `json_bytes`)."""
    return json_bytes(obj, newline=True)


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each complete line; a torn last line (crash mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: file not found")
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            torn = not raw.endswith(b"\n")
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                if torn:
                    return  # the writer died mid-line; resume rewrites this record
                raise RecordError(f"{path}:{lineno}: not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
            if not isinstance(obj, dict):
                raise RecordError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_records(path: str | Path, cls: type[T]) -> Iterator[T]:
    """Typed records from a JSONL file; a bad record raises RecordError naming file, line and field."""
    for lineno, obj in iter_json_lines(path):
        yield record_from_dict(cls, obj, where=f"{path}:{lineno}")


class _Fields:
    """A dataclass record's fields read as `record["name"]`, so one key function serves dicts and dataclasses."""

    __slots__ = ("_record",)

    def __init__(self, record: Any):
        self._record = record

    def __getitem__(self, name: str) -> Any:
        return getattr(self._record, name)


class JsonlAppender:
    """Appends one record per line, flushed per record; knows which ids are already written.

    Opening repairs a torn last line left by a crash, so that resume neither loses a complete
    record nor glues a new one onto half of an old one.
    """

    def __init__(self, path: str | Path, key: Optional[Callable[[dict[str, Any]], Any]] = lambda r: r["id"], fsync: bool = False):
        """`key=None`: append only (the file's records are neither read nor indexed; a torn last line is still cut)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._key = key
        self._fsync = fsync
        self.done: set[Any] = set()
        try:
            if self.path.exists():
                self._repair_torn_tail()
                for _, obj in iter_json_lines(self.path) if key is not None else ():
                    self.done.add(key(obj))
            # Unbuffered: a record is on its way to the disk when write() returns, or write() failed.
            self._fh = self.path.open("ab", buffering=0)
        except OSError as exc:
            raise storage_error(self.path, exc) from None

    def _repair_torn_tail(self) -> None:
        with self.path.open("rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            # Walk back to the last newline and cut the partial record off.
            pos = size - 1
            chunk = 4096
            while pos > 0:
                start = max(0, pos - chunk)
                fh.seek(start)
                data = fh.read(pos - start)
                nl = data.rfind(b"\n")
                if nl >= 0:
                    fh.truncate(start + nl + 1)
                    return
                pos = start
            fh.truncate(0)

    def __contains__(self, key: Any) -> bool:
        return key in self.done

    def write(self, record: Any) -> None:
        """Append one record (a dict or a dataclass); when the disk refuses, cut the part written so the file ends
        on a complete record."""
        self._append(json_line(record))
        if self._key is not None:
            self.done.add(self._key(record if isinstance(record, dict) else _Fields(record)))

    def write_many(self, records: list[dict[str, Any]]) -> None:
        """Append records with one write (complete lines only, so appenders in other processes never split one)."""
        if records:
            self._append(b"".join(json_line(r) for r in records))
            if self._key is not None:
                self.done.update(self._key(r) for r in records)

    def _append(self, data: bytes) -> None:
        fd = self._fh.fileno()
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self._fsync:
                os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass  # the next open cuts the torn record off
            raise storage_error(self.path, exc) from None

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a whole file so that readers see the old or the new content, never half of it."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """`atomic_write_text` for bytes already encoded (a large JSON file from `json_bytes`)."""
    with atomic_file(path) as fh:
        try:
            fh.write(data)
        except OSError as exc:
            raise storage_error(Path(path), exc) from None


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A file to write in pieces (a dataset too big to hold in memory) that readers see whole or not at all:
    written beside `path`, synced, and moved over it when the block ends; removed if the block raises (its
    exceptions pass unchanged: the block may read other files)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise storage_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            try:
                fh.flush()
                os.fsync(fh.fileno())
            except OSError as exc:
                raise storage_error(path, exc) from None
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise storage_error(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


@contextlib.contextmanager
def following(path: Path, on_growth: Callable[[], None], every_s: float) -> Iterator[None]:
    """While the block runs (a trainer writing its JSONL log), call `on_growth` from a thread whenever `path` has changed
    size, and once more at the end. What `on_growth` raises is logged as a warning: following is a side channel, and
    never stops the work it follows."""
    import logging
    import threading

    stop = threading.Event()

    def call() -> None:
        try:
            on_growth()
        except Exception as exc:  # noqa: BLE001 - a side channel
            logging.getLogger("webdancer.jsonl").warning("following %s: %s", path, exc)

    def follow() -> None:
        size = -1
        while not stop.wait(every_s):
            try:
                now = path.stat().st_size if path.is_file() else -1
            except OSError:
                continue
            if now != size:
                size = now
                call()

    thread = threading.Thread(target=follow, name="webdancer-following", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        call()
