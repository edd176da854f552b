"""BM25 search over the page store with bm25s (sparse-matrix BM25; chosen by measurement, see benchmarks/)."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import bm25s
import bm25s.tokenization
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

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


# bm25s.tokenize's defaults as `tokenize` uses them: lower-cased, its English stopwords, and its token pattern
# \b\w\w+\b, which finds the same words as \w\w+ (a match starts a word and takes all of it) 1.6x slower.
_SPLIT = re.compile(r"\w\w+").findall
_STOPWORDS = frozenset(STOPWORDS_EN)


@dataclass
class TokenPart:
    """Some documents tokenized as `tokenize` does, with ids into the part's own vocabulary (in order of first
    appearance), so that worker processes tokenize parts of a corpus and `merge_parts` numbers the words as one
    `tokenize` over the whole corpus would. Arrays, so a part crosses processes as a few buffers."""

    vocab: list[str]
    vocab_after: np.ndarray  # the vocabulary's size after each document: document j brought vocab[after[j-1]:after[j]]
    lengths: np.ndarray  # each document's token count
    ids: np.ndarray  # every document's token ids, one after another


def tokenize_part(texts: Sequence[str]) -> TokenPart:
    vocab: dict[str, int] = {}
    ids: list[int] = []
    lengths, vocab_after = [], []
    for text in texts:
        doc = [vocab.setdefault(w, len(vocab)) for w in _SPLIT(text.lower()) if w not in _STOPWORDS]
        ids += doc
        lengths.append(len(doc))
        vocab_after.append(len(vocab))
    return TokenPart(list(vocab), np.array(vocab_after, np.int64), np.array(lengths, np.int64), np.array(ids, np.int32))


def merge_parts(parts: Sequence[tuple[Sequence[int], TokenPart]], n_docs: int) -> "bm25s.tokenization.Tokenized":
    """(document numbers, part) pairs covering documents 0..n_docs-1, each part's numbers ascending, as the
    Tokenized that `tokenize` gives for all documents in order: the same vocabulary ids, the same id lists."""
    place: list[tuple[int, int]] = [(-1, -1)] * n_docs
    for p, (numbers, _) in enumerate(parts):
        for j, number in enumerate(numbers):
            place[number] = (p, j)
    if any(p < 0 for p, _ in place):
        raise ValueError(f"merge_parts: documents {[n for n, (p, _) in enumerate(place) if p < 0][:5]} are in no part")
    afters = [[0, *part.vocab_after.tolist()] for _, part in parts]
    arrivals: list[str] = []  # each document's words new to its part, document by document
    for p, j in place:
        arrivals += parts[p][1].vocab[afters[p][j] : afters[p][j + 1]]
    vocab = {word: i for i, word in enumerate(dict.fromkeys(arrivals))}  # a word's id: its first appearance
    docs: list[list[int]] = [[]] * n_docs
    for numbers, part in parts:
        global_ids = np.array(list(map(vocab.__getitem__, part.vocab)), np.int64)[part.ids].tolist() if part.vocab else []
        ends = np.cumsum(part.lengths).tolist()
        for number, start, end in zip(numbers, [0] + ends, ends):
            docs[number] = global_ids[start:end]
    return bm25s.tokenization.Tokenized(ids=docs, vocab=vocab)


def build_index(docs: Sequence[str], out_dir: Path) -> None:
    """One process's index of `docs` (a user's corpus): bm25s's tokenizer makes each document's id list directly,
    without the flat arrays parts cross processes in (at 1M documents those cost 1.6 GB more peak RSS)."""
    index_tokens(tokenize(docs), out_dir)


def index_tokens(tokens: "bm25s.tokenization.Tokenized", out_dir: Path) -> None:
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=False)
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
