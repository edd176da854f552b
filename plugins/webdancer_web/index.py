"""BM25 search over the page store with bm25s (sparse-matrix BM25; chosen by measurement, see benchmarks/)."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import bm25s
import numpy as np

from webdancer.errors import WebdancerError

_WORD = re.compile(r"\w+")
logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build at DEBUG


@dataclass
class Hit:
    url: str
    title: str
    snippet: str
    score: float


def tokenize(texts: Sequence[str]):
    return bm25s.tokenize(list(texts), stopwords="en", show_progress=False)


def build_index(docs: Sequence[str], out_dir: Path) -> None:
    retriever = bm25s.BM25()
    retriever.index(tokenize(docs), show_progress=False)
    retriever.save(str(out_dir))


def retrieve(retriever: "bm25s.BM25", query: str, k: int, n_docs: int) -> list[tuple[int, float]]:
    """(document number, score) of the best `k` documents with a positive score; none for a query of stopwords only."""
    tokens = tokenize([query])
    if not tokens.vocab or not any(len(ids) for ids in tokens.ids):
        return []
    results, scores = retriever.retrieve(tokens, k=min(k, n_docs), show_progress=False, n_threads=1)
    return [(int(doc), float(np.round(score, 4))) for doc, score in zip(results[0], scores[0]) if score > 0]


def best_snippet(text: str, query: str, width: int = 240, lowered: str | None = None) -> str:
    """The window of `text` around the spot where most query words meet; the page opening as a fallback.

    Works on positions found with str.find, so a long page costs microseconds, not a full scan per sentence.
    """
    low = lowered if lowered is not None else text.lower()
    terms = {w.lower() for w in _WORD.findall(query) if len(w) > 2 and w.lower() not in _STOP}
    half = width // 2
    best_pos, best_score = -1, 0
    for term in terms:
        start, seen = 0, 0
        while seen < 20:
            pos = low.find(term, start)
            if pos < 0:
                break
            window = low[max(0, pos - half) : pos + half]
            score = sum(1 for t in terms if t in window)
            if score > best_score:
                best_pos, best_score = pos, score
            start, seen = pos + len(term), seen + 1
    if best_pos < 0:
        return _trim(" ".join(text[: width * 2].split()), width)
    lo = max(0, best_pos - half)
    cut = text.rfind("\n", lo, best_pos)
    if cut >= 0:
        lo = cut + 1
    elif lo > 0:  # start on a word boundary
        lo = text.find(" ", lo, best_pos) + 1
    return _trim(" ".join(text[lo : lo + width + 40].split()), width)


def _trim(snippet: str, width: int) -> str:
    return snippet if len(snippet) <= width else snippet[: width - 3].rsplit(" ", 1)[0] + "..."


_STOP = {"the", "and", "for", "was", "who", "what", "which", "with", "that", "this", "from", "are", "how", "when", "where"}


class LocalIndex:
    """A built index plus the titles and texts needed for snippets, loaded once per process."""

    def __init__(self, root: Path):
        index_dir = root / "index"
        meta = root / "index_docs.json"
        if not index_dir.is_dir() or not meta.is_file():
            raise WebdancerError(f"no search index in {root}: run `webdancer web build` first")
        self.retriever = bm25s.BM25.load(str(index_dir))
        docs = json.loads(meta.read_text(encoding="utf-8"))
        self.urls: list[str] = docs["urls"]
        self.titles: list[str] = docs["titles"]
        self.texts: list[str] = docs["texts"]
        self._lowered: dict[int, str] = {}

    def search(self, query: str, k: int = 10) -> list[Hit]:
        hits = []
        for doc, score in retrieve(self.retriever, query, k, len(self.urls)):
            low = self._lowered.get(doc)
            if low is None:
                low = self._lowered[doc] = self.texts[doc].lower()
            hits.append(Hit(self.urls[doc], self.titles[doc], best_snippet(self.texts[doc], query, lowered=low), score))
        return hits
