"""A generated site stored as two files: its pages' HTML one after another, and a table of where each page is.

One file per page cost 80-270 us of kernel time a file on this machine's ext4 (FOLDOC's 12,015 pages: 1-3 s of a
6 s `web build`); one file of pages costs a sequential write. The server reads a page with one pread."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional, Sequence

from webdancer.errors import WebdancerError
from webdancer.jsonl import atomic_write_json


class PackWriter:
    """Writes `<table>` (JSON) and the data file it names; readers see the old pack or the new one, never a mix:
    each build's data file has a name of its own, and the table, replaced atomically last, switches to it."""

    def __init__(self, table: Path):
        self.table = table
        self.data = table.with_name(f"{table.stem}.{time.time_ns():x}.pages")
        self.partial = self.data.with_name(self.data.name + ".tmp")
        self.index: dict[str, list[int]] = {}
        self.redirects: dict[str, str] = {}  # alias -> page path
        self.offset = 0
        self.fh = self.partial.open("wb")

    def add(self, path: str, html: str, redirects_from: Sequence[str] = ()) -> None:
        if path in self.index:
            raise WebdancerError(f"{self.table.stem}: two pages at {path!r}; a site's page paths must be unique")
        self.redirects.update((alias, path) for alias in redirects_from)
        data = html.encode("utf-8")
        self.index[path] = [self.offset, len(data)]
        self.fh.write(data)
        self.offset += len(data)

    def commit(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())  # on disk before the table names it
        self.fh.close()
        os.replace(self.partial, self.data)
        atomic_write_json(self.table, {"data": self.data.name, "pages": self.index, "redirects": dict(sorted(self.redirects.items()))})
        for old in self.table.parent.glob(f"{self.table.stem}.*.pages"):  # earlier builds' data
            if old != self.data:
                old.unlink(missing_ok=True)

    def abort(self) -> None:
        self.fh.close()
        self.partial.unlink(missing_ok=True)


class Pack:
    """A packed site opened for serving: its pages by path, its redirects, and when it was written."""

    def __init__(self, table: Path):
        try:
            spec = json.loads(table.read_text(encoding="utf-8"))
            self.index: dict[str, list[int]] = spec["pages"]
            self.redirects: dict[str, str] = spec["redirects"]
            data = table.with_name(spec["data"])
            self.fd = os.open(data, os.O_RDONLY)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WebdancerError(f"packed site {table} cannot be read ({exc}): run `webdancer web build` again") from None
        self.modified = os.fstat(self.fd).st_mtime

    def page(self, path: str) -> Optional[bytes]:
        where = self.index.get(path)
        return None if where is None else os.pread(self.fd, where[1], where[0])

    def close(self) -> None:
        os.close(self.fd)
