"""Search at scale: our BM25 top-k gives bm25s's own scores (ranked, ties by document number), and worker
processes (`tools.search.workers`) answer exactly what the in-process search answers, for the offline web and
for a user's corpus."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from webdancer_web.config import SearchConfig
from webdancer_web.corpus import CorpusSearch
from webdancer_web.index import LocalIndex, retrieve, tokenize
from webdancer_web.search import LocalSearch

from webdancer.errors import WebdancerError


def queries(index: LocalIndex) -> list[str]:
    picked = [" ".join(text.split()[:6]) for text in index.texts[::37]]
    return picked + ["python", "recursion", "the of and", "zzqqxxv", "Guido van Rossum interpreted language 1991"]


def test_top_k_has_bm25s_scores_in_order_with_ties_by_document(local_web):
    web, _, _ = local_web
    index = LocalIndex(Path(web.root))
    n, checked = len(index.urls), 0
    for q in queries(index):
        ours = retrieve(index.retriever, q, 10, n)
        tokens = tokenize([q])
        if not tokens.vocab or not any(len(ids) for ids in tokens.ids):
            assert ours == []
            continue
        docs, scores = index.retriever.retrieve(tokens, k=10, show_progress=False, n_threads=1)
        theirs = sorted((-round(float(s), 4), int(d)) for d, s in zip(docs[0], scores[0]) if s > 0)
        # The same scores, best first; where bm25s breaks a tie at the cut differently, only the document differs.
        assert [s for _, s in ours] == [-s for s, _ in theirs]
        assert all(a[1] > b[1] or (a[1] == b[1] and a[0] < b[0]) for a, b in zip(ours, ours[1:]))
        checked += 1
    assert checked > 50


def test_parts_tokenized_apart_merge_into_what_bm25s_tokenize_gives(local_web):
    """`web build` tokenizes pages in worker processes, in batches handed out biggest first: merged, the vocabulary
    (ids included) and every document's ids equal one bm25s.tokenize over all pages in order."""
    import random

    from webdancer_web.index import merge_parts, tokenize_part

    web, _, _ = local_web
    index = LocalIndex(Path(web.root))
    texts = [f"{t}\n{x}" for t, x in zip(index.titles[::7], index.texts[::7])]
    texts += ["", "a b c", "Ünïcödé wörds_and_snake_case x2 42 ÉCOLE école", "the of and", "don't re-use e-mail"]
    expected = tokenize(texts)
    rng = random.Random(3)
    numbers = list(range(len(texts)))
    rng.shuffle(numbers)
    cuts = sorted(rng.sample(range(1, len(texts)), 30))
    parts = [(sorted(numbers[a:b]), None) for a, b in zip([0, *cuts], [*cuts, len(texts)])]
    parts = [(nums, tokenize_part([texts[n] for n in nums])) for nums, _ in parts]
    rng.shuffle(parts)
    merged = merge_parts(parts, len(texts))
    assert list(merged.vocab.items()) == list(expected.vocab.items())
    assert merged.ids == expected.ids
    with pytest.raises(ValueError, match="in no part"):
        merge_parts(parts[1:], len(texts))


async def test_worker_processes_answer_what_this_process_answers(local_web):
    web, _, _ = local_web
    inline = LocalSearch(SearchConfig(web_root=web.root))
    pooled = LocalSearch(SearchConfig(web_root=web.root, workers=2))
    assert pooled.searcher is None and inline.searcher is not None  # the index lives in the workers, not here
    for q in queries(inline.searcher)[::5]:
        assert await pooled.search(q, 5) == await inline.search(q, 5)
    # Many in flight: the requests of one event-loop turn go to a worker as one batch; each gets its own hits back.
    many = queries(inline.searcher)[:40]
    assert await asyncio.gather(*(pooled.search(q, 5) for q in many)) == [await inline.search(q, 5) for q in many]


async def test_corpus_workers_share_the_index_built_once_here(tmp_path):
    from test_corpus import records, write_jsonl

    corpus = write_jsonl(tmp_path / "towns.jsonl", records())
    inline = CorpusSearch(SearchConfig(backend="corpus", corpus=corpus, corpus_index_dir=str(tmp_path / "idx")))
    built = list((tmp_path / "idx").iterdir())
    pooled = CorpusSearch(SearchConfig(backend="corpus", corpus=corpus, corpus_index_dir=str(tmp_path / "idx"), workers=2))
    assert list((tmp_path / "idx").iterdir()) == built  # the workers load the same index, nothing rebuilt
    for q in ["oldest bridge Quillwater", "market town river bridge 1726", "Elsmere"]:
        hits = await pooled.search(q, 3)
        assert hits == await inline.search(q, 3) and hits


def test_a_negative_worker_count_is_refused_by_name(local_web):
    web, _, _ = local_web
    with pytest.raises(WebdancerError, match="tools.search.workers is -1"):
        LocalSearch(SearchConfig(web_root=web.root, workers=-1))


async def test_a_worker_that_cannot_load_the_index_reports_why(tmp_path):
    """The index vanished after the tool was made: the workers die loading it; the error names the index."""
    import shutil

    from test_corpus import records, write_jsonl

    corpus = write_jsonl(tmp_path / "towns.jsonl", records())
    pooled = CorpusSearch(SearchConfig(backend="corpus", corpus=corpus, corpus_index_dir=str(tmp_path / "idx"), workers=1))
    folder = next((tmp_path / "idx").iterdir())
    shutil.rmtree(folder / "bm25")
    with pytest.raises(WebdancerError, match=r"could not load the corpus .*towns.jsonl: FileNotFoundError"):
        await pooled.search("bridge", 3)


async def test_a_killed_worker_fails_its_queries_clearly_and_the_next_search_starts_new_ones(local_web):
    import os
    import signal

    from webdancer_web import search_workers

    web, _, _ = local_web
    tool = LocalSearch(SearchConfig(web_root=web.root, workers=1))
    assert await tool.search("recursion", 3)
    pool = search_workers._pools[(tool.spec, 1)]
    os.kill(pool.workers[0].proc.pid, signal.SIGKILL)
    with pytest.raises(WebdancerError, match="search worker for the offline web in .* (died|is gone)"):
        await tool.search("recursion", 3)
    assert await tool.search("recursion", 3)  # a new pool
    assert search_workers._pools[(tool.spec, 1)] is not pool
