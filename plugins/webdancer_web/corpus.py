"""A user's own corpus as the agent's web: `tools.search.backend: corpus` (BM25 over it) and `tools.visit.reader:
corpus` (its documents by URL), so a Wikipedia-style dump replaces the offline web without code.

The corpus is a JSONL or parquet file of `{id, title, text, url}` records (`url` may be left out: the document is
then `corpus://<id>`). The index is built once into `corpus_index_dir/<key>/` (key: the file's path, size and
mtime, so an edited corpus gets a new index), atomically, and loaded memory-mapped. JSONL document texts stay in
the file and are read by byte offset when a result or a page needs them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from webdancer.errors import WebdancerError
from webdancer.jsonl import atomic_write_text
from webdancer_web.config import SearchConfig, VisitConfig
from webdancer_web.index import Hit, best_snippet, build_index, retrieve
from webdancer_web.readers import FetchError, PageContent, PageReader
from webdancer_web.search import IndexSearch
from webdancer_web.search_workers import Spec

log = logging.getLogger("webdancer.corpus")
REQUIRED = ("id", "title", "text")
SCHEME = "corpus://"
FORMAT = 1


class CorpusError(WebdancerError):
    """A corpus file the backend cannot use; the message names the file, the line and what to fix."""


def _records(path: Path) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(line or row number from 1, byte offset of the line or -1, record) of a JSONL or parquet corpus."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for record in batch.to_pylist():
                number += 1
                yield number, -1, record
        return
    with path.open("rb") as fh:
        offset, number = 0, 0
        for raw in fh:
            number += 1
            if raw.strip():
                try:
                    record = json.loads(raw)
                except ValueError as exc:
                    raise CorpusError(f"{path}, line {number}: not JSON ({exc})") from None
                yield number, offset, record
            offset += len(raw)


def _unit(path: Path) -> str:
    """What a record's number counts in `path`: rows of a parquet file, lines of a JSONL file."""
    return "row" if path.suffix == ".parquet" else "line"


def _check(path: Path, number: int, record: Any) -> tuple[str, str, str, str]:
    where = f"{path}, {_unit(path)} {number}"
    if not isinstance(record, dict):
        raise CorpusError(f"{where}: a record must be an object with {', '.join(REQUIRED)} (and url)")
    missing = [f for f in REQUIRED if record.get(f) is None]
    if missing:
        raise CorpusError(f"{where}: missing field(s) {', '.join(missing)}; every record needs id, title, text (url optional)")
    doc_id, title, text, url = str(record["id"]), record["title"], record["text"], record.get("url") or f"{SCHEME}{record['id']}"
    if not isinstance(title, str) or not isinstance(text, str) or not isinstance(url, str):
        raise CorpusError(f"{where}: title, text and url must be strings")
    return doc_id, title, text, url


class Corpus:
    """A built corpus index: BM25 (memory-mapped), ids, titles, urls, and where each text is."""

    def __init__(self, path: Path, folder: Path):
        import bm25s

        self.path, self.folder = path, folder
        meta = json.loads((folder / "docs.json").read_text(encoding="utf-8"))
        self.ids: list[str] = meta["ids"]
        self.titles: list[str] = meta["titles"]
        self.urls: list[str] = meta["urls"]
        self.by_url = {url: i for i, url in enumerate(self.urls)}
        self.retriever = bm25s.BM25.load(str(folder / "bm25"), mmap=True)
        self._offsets: Optional[np.ndarray] = None
        self._texts: Any = None
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            self._texts = pq.read_table(path, columns=["text"]).column("text")
        else:
            self._offsets = np.load(folder / "offsets.npy", mmap_mode="r")
            self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self.ids)

    def text(self, i: int) -> str:
        if self._texts is not None:
            return self._texts[i].as_py()
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        return json.loads(os.pread(self._fd, end - start, start))["text"]

    def search(self, query: str, k: int) -> list[Hit]:
        return [Hit(self.urls[d], self.titles[d], best_snippet(self.text(d), query), score) for d, score in retrieve(self.retriever, query, k, len(self))]

    def find(self, url: str) -> Optional[int]:
        return self.by_url.get(url)


def index_folder(path: Path, index_dir: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{FORMAT}".encode()).hexdigest()[:16]
    return index_dir / f"{path.stem}-{key}"


def build(path: Path, folder: Path) -> None:
    """Check every record (a clear error naming the line) and write the index into `folder`, atomically."""
    ids: dict[str, int] = {}
    urls: dict[str, int] = {}
    titles, url_list, offsets, texts = [], [], [], []
    kind = _unit(path)
    for number, offset, record in _records(path):
        doc_id, title, text, url = _check(path, number, record)
        if doc_id in ids:
            raise CorpusError(f"{path}, {kind} {number}: duplicate id {doc_id!r} (first at {kind} {ids[doc_id]}); ids must be unique")
        if url in urls:
            raise CorpusError(f"{path}, {kind} {number}: duplicate url {url!r} (first at {kind} {urls[url]}); visit finds documents by url")
        ids[doc_id], urls[url] = number, number
        titles.append(title)
        url_list.append(url)
        texts.append(f"{title}\n{text}")
        if offset >= 0:
            offsets.append(offset)
    if not ids:
        raise CorpusError(f"{path}: no records; a corpus is JSONL or parquet of {{id, title, text, url}}")
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build_index(texts, tmp / "bm25")
    if offsets:
        np.save(tmp / "offsets.npy", np.array(offsets + [path.stat().st_size], dtype=np.int64))  # record i: [i, i+1)
    atomic_write_text(tmp / "docs.json", json.dumps({"corpus": str(path.resolve()), "ids": list(ids), "titles": titles, "urls": url_list}))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process built it first: theirs is the same index
        shutil.rmtree(tmp, ignore_errors=True)


def load_corpus(corpus: str, index_dir: str, option: str) -> Corpus:
    """The corpus at `corpus`, indexed under `index_dir` (built on first use); `option` names the setting in errors.
    `search` and `visit` of one run share one loaded corpus."""
    return _open(*indexed(corpus, index_dir, option))


def indexed(corpus: str, index_dir: str, option: str) -> tuple[Path, Path]:
    """(corpus file, index folder) after building the index if it is not there yet."""
    if not corpus:
        raise CorpusError(f"{option} is empty: set it to a JSONL or parquet file of {{id, title, text, url}} records")
    path = Path(corpus)
    if not path.is_file():
        raise CorpusError(f"{option}: no corpus file at {path}")
    if path.suffix not in (".jsonl", ".parquet"):
        raise CorpusError(f"{option}: {path} must be a .jsonl or .parquet file of {{id, title, text, url}} records")
    path, folder = path.resolve(), index_folder(path, Path(index_dir)).resolve()
    if not (folder / "docs.json").is_file():
        log.info("indexing the corpus %s into %s", path, folder)
        build(path, folder)
    return path, folder


@functools.lru_cache(maxsize=4)
def _open(path: Path, folder: Path) -> Corpus:
    """Load the built index in `folder`; cached by folder, which changes when the file does."""
    return Corpus(path, folder)


class CorpusSearch(IndexSearch):
    """`tools.search.backend: corpus`: BM25 over `tools.search.corpus`."""

    name = "corpus"
    label = "A search of the corpus"

    def index_spec(self, config: SearchConfig, in_workers: bool) -> Spec:
        path, _ = indexed(config.corpus, config.corpus_index_dir, "tools.search.corpus")  # built here, once, not by each worker
        return ("corpus", str(path), config.corpus_index_dir)

    @property
    def where(self) -> str:
        return f"the corpus {self.spec[1]}"


class CorpusReader(PageReader):
    """`tools.visit.reader: corpus`: a document of `tools.visit.corpus` by its url (or `corpus://<id>`); no network."""

    name = "corpus"

    def __init__(self, config: VisitConfig):
        super().__init__(config)
        self.corpus = load_corpus(config.corpus, config.corpus_index_dir, "tools.visit.corpus")

    async def read(self, url: str) -> PageContent:
        i = self.corpus.find(url)
        if i is None:
            raise FetchError(f"not in the corpus ({self.corpus.path.name}); visit the URLs that search returned")
        return PageContent(url, url, self.corpus.titles[i], self.corpus.text(i))
