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


def query_token_ids(retriever: "bm25s.BM25", query: str) -> list[int]:
    """The query's words (bm25s's own tokenizer, English stopwords) as ids of the index's vocabulary; unknown words dropped."""
    words = bm25s.tokenize([query], stopwords="en", show_progress=False, return_ids=False)[0]
    vocab = retriever.vocab_dict
    return [vocab[w] for w in words if w in vocab]


def retrieve(retriever: "bm25s.BM25", query: str, k: int, n_docs: int) -> list[tuple[int, float]]:
    """(document number, score) of the best `k` documents with a positive score, best first, ties by document
    number; none for a query of stopwords or unknown words only.

    The BM25 scores are bm25s's own (its precomputed sparse matrix, summed per query word as it sums them);
    the top k is chosen among the documents that share a word with the query. bm25s.retrieve partitions every
    document's score instead (19.6 of 21 ms per query over 1M documents, mostly zeros) and starts a thread and
    two progress bars per call (~1 ms over the 12,545-page offline web). Numpy releases the GIL in these
    steps, so queries in threads use more than one core.
    """
    ids = query_token_ids(retriever, query)
    if not ids:
        return []
    matrix = retriever.scores
    data, indices, indptr = matrix["data"], matrix["indices"], matrix["indptr"]
    scores = np.zeros(n_docs, dtype=data.dtype)
    for t in ids:  # a repeated word counts again, as in bm25s
        start, end = indptr[t], indptr[t + 1]
        scores[indices[start:end]] += data[start:end]
    if retriever.nonoccurrence_array is not None:  # BM25L/BM25+ variants score absent words too
        scores += retriever.nonoccurrence_array[ids].sum()
    candidates = np.flatnonzero(scores > 0)
    values = scores[candidates]
    if len(candidates) > k:
        kth = np.partition(values, len(values) - k)[len(values) - k]  # the k-th best score
        above, tied = candidates[values > kth], candidates[values == kth]
        candidates = np.concatenate([above, tied[: k - len(above)]])  # ties: lower document numbers first
        values = scores[candidates]
    order = np.lexsort((candidates, -values))
    return [(int(candidates[i]), round(float(values[i]), 4)) for i in order]


def best_snippet(text: str, query: str, width: int = 240, lowered: str | None = None) -> str:
    """The window of `text` around the spot where most query words meet; the page opening as a fallback.

    Works on positions found with str.find, so a long page costs microseconds, not a full scan per sentence.
    """
    low = lowered if lowered is not None else text.lower()
    # In query order, not a set's: a set of str iterates in a per-process hash order, and the first best
    # window wins ties, so the same search gave different snippets in different processes.
    terms = list(dict.fromkeys(w.lower() for w in _WORD.findall(query) if len(w) > 2 and w.lower() not in _STOP))
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
        index_dir, meta = self.check(root)
        self.retriever = bm25s.BM25.load(str(index_dir))
        docs = json.loads(meta.read_text(encoding="utf-8"))
        self.urls: list[str] = docs["urls"]
        self.titles: list[str] = docs["titles"]
        self.texts: list[str] = docs["texts"]
        self._lowered: dict[int, str] = {}

    @staticmethod
    def check(root: Path) -> tuple[Path, Path]:
        """The index folder and its documents' file in `root`; a clear error when `web build` has not made them."""
        index_dir, meta = root / "index", root / "index_docs.json"
        if not index_dir.is_dir() or not meta.is_file():
            raise WebdancerError(f"no search index in {root}: run `webdancer web build` first")
        return index_dir, meta

    def search(self, query: str, k: int = 10) -> list[Hit]:
        hits = []
        for doc, score in retrieve(self.retriever, query, k, len(self.urls)):
            low = self._lowered.get(doc)
            if low is None:
                low = self._lowered[doc] = self.texts[doc].lower()
            hits.append(Hit(self.urls[doc], self.titles[doc], best_snippet(self.texts[doc], query, lowered=low), score))
        return hits
