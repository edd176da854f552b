"""BM25 search in worker processes (`tools.search.workers: N`), so query throughput grows with cores.

A query's Python steps (tokenizing, snippets) hold the GIL, so threads of one process do not add cores.
Each worker loads the index itself, memory-mapped where the backend maps it (the corpus backend's BM25
matrix and offsets: one copy in the page cache for all workers; its titles and urls once per worker).
Queries go over one pipe per worker, read by the event loop itself (`add_reader`): measured over 1M
documents, concurrent.futures' process pool added a thread and ~0.5 ms of hand-offs per query, and
2 workers gave 1.46x one worker instead of the 1.9x two separate processes reach. The queries of one
event-loop turn go to a worker as one message and come back as one: on the offline web (0.2 ms a
query) that cut the parent's CPU per query from ~45 to ~20 us, and 2 workers went from 1.52x to
1.74-1.85x one worker on 2 cores (benchmarks/web_tools.py).
The pool for an index starts on the first query and is shared by every search tool of the process.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import itertools
import multiprocessing as mp
from multiprocessing.connection import Connection
from typing import Any

from webdancer.errors import WebdancerError
from webdancer_web.index import Hit

Spec = tuple[str, ...]  # ("local", web_root) or ("corpus", corpus, index_dir)
LOAD_FAILED = -1


@functools.lru_cache(maxsize=4)
def open_searcher(spec: Spec) -> Any:
    """The object with `.search(query, k) -> list[Hit]` that `spec` names, loaded once per process."""
    if spec[0] == "local":
        from pathlib import Path

        from webdancer_web.index import LocalIndex

        return LocalIndex(Path(spec[1]))
    from webdancer_web.corpus import load_corpus

    return load_corpus(spec[1], spec[2], "tools.search.corpus")


def _serve(conn: Connection, spec: Spec) -> None:
    """A worker: load the index, then answer each batch [(id, query, k), ...] with one batch [(id, error or None, hits), ...]
    until the pipe closes."""
    try:
        searcher = open_searcher(spec)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which names the index
        conn.send([(LOAD_FAILED, f"{type(exc).__name__}: {exc}", None)])
        return
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return
        replies = []
        for request_id, query, k in batch:
            try:
                replies.append((request_id, None, [(h.url, h.title, h.snippet, h.score) for h in searcher.search(query, k)]))
            except Exception as exc:  # noqa: BLE001 - one bad query fails that query only
                replies.append((request_id, f"{type(exc).__name__}: {exc}", None))
        conn.send(replies)


class _Worker:
    def __init__(self, spec: Spec):
        ctx = mp.get_context("spawn")  # not fork: the parent runs an event loop and threads a child must not inherit
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, spec), daemon=True, name="webdancer-search")
        self.proc.start()
        child.close()
        self.pending: dict[int, asyncio.Future] = {}
        self.outbox: list[tuple[int, str, int]] = []  # requests of this event-loop turn, sent as one message
        self.loop: asyncio.AbstractEventLoop | None = None


class WorkerPool:
    """`n` worker processes holding the index `spec` names; `where` describes it in errors."""

    def __init__(self, spec: Spec, n: int, where: str):
        self.spec, self.where = spec, where
        self.workers = [_Worker(spec) for _ in range(n)]
        self.ids = itertools.count()
        self.broken = ""

    async def search(self, query: str, k: int) -> list[Hit]:
        if self.broken:
            raise WebdancerError(self.broken)
        loop = asyncio.get_running_loop()
        worker = min(self.workers, key=lambda w: len(w.pending))
        if worker.loop is not loop:  # first use, or a new event loop (each asyncio.run makes one)
            worker.loop = loop
            loop.add_reader(worker.conn.fileno(), self._receive, worker)
        request_id = next(self.ids)
        future = worker.pending[request_id] = loop.create_future()
        if not worker.outbox:
            loop.call_soon(self._send, worker)
        worker.outbox.append((request_id, query, k))
        rows = await future
        return [Hit(*row) for row in rows]

    def _send(self, worker: _Worker) -> None:
        """The requests queued for `worker` in this turn of the event loop, in one message (one write, one wake-up)."""
        batch, worker.outbox = worker.outbox, []
        if self.broken:
            return
        try:
            worker.conn.send(batch)
        except OSError:
            self._fail(f"a search worker for {self.where} is gone (killed or out of memory?); the next search starts new ones")

    def _receive(self, worker: _Worker) -> None:
        while True:
            try:
                if not worker.conn.poll():
                    return
                replies = worker.conn.recv()
            except (EOFError, OSError):
                self._fail(f"a search worker for {self.where} died (killed or out of memory?); the next search starts new ones")
                return
            for request_id, error, rows in replies:
                if request_id == LOAD_FAILED:
                    self._fail(f"a search worker could not load {self.where}: {error}")
                    return
                future = worker.pending.pop(request_id, None)
                if future is None or future.done():
                    continue
                if error is not None:
                    future.set_exception(WebdancerError(f"search failed in the worker for {self.where}: {error}"))
                else:
                    future.set_result(rows)

    def _fail(self, message: str) -> None:
        self.broken = message
        if _pools.get(self.spec_key) is self:  # a newer pool for the same index stays
            del _pools[self.spec_key]
        for worker in self.workers:
            if worker.loop is not None and not worker.loop.is_closed():
                worker.loop.remove_reader(worker.conn.fileno())
            for future in worker.pending.values():
                if not future.done():
                    future.set_exception(WebdancerError(message))
            worker.pending.clear()
        self.close()

    @property
    def spec_key(self) -> tuple[Spec, int]:
        return (self.spec, len(self.workers))

    def close(self) -> None:
        for worker in self.workers:
            worker.conn.close()
            worker.proc.join(timeout=1)
            if worker.proc.is_alive():
                worker.proc.kill()


_pools: dict[tuple[Spec, int], WorkerPool] = {}


async def search_in_workers(spec: Spec, workers: int, query: str, k: int, where: str) -> list[Hit]:
    """`query` on one of `workers` processes holding the index `spec` names; `where` describes it in errors."""
    pool = _pools.get((spec, workers))
    if pool is None:
        pool = _pools[(spec, workers)] = WorkerPool(spec, workers, where)
    return await pool.search(query, k)


@atexit.register
def _shutdown() -> None:
    for pool in list(_pools.values()):
        pool.close()
    _pools.clear()
