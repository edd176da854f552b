"""The `search` tool (reference schema: a list of queries) and its backends: local BM25 and Serper."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar, Optional

import httpx

from webdancer.breaker import BREAKERS
from webdancer.errors import OutageError, WebdancerError
from webdancer.http import RetriesExhausted, Retry, with_retries
from webdancer.keys import read_secret
from webdancer.leaks import Blocklist
from webdancer.tools import Tool
from webdancer_web.config import SearchConfig
from webdancer_web.index import Hit, LocalIndex
from webdancer_web.search_workers import Spec, open_searcher, search_in_workers

SEPARATOR = "\n=======\n"
BLOCKED_SPARE = 5  # extra results asked for when a blocklist is on, so dropping a few still leaves top_k
RETRY_STATUS = {429, 500, 502, 503, 504}


class SearchBackend:
    """Subclass, set `name` and `label`, implement `search`. Raise WebdancerError for readable failures."""

    name: ClassVar[str]
    label: ClassVar[str] = "A search"

    def __init__(self, config: SearchConfig):
        self.config = config

    async def search(self, query: str, k: int) -> list[Hit]:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close clients."""


class IndexSearch(SearchBackend):
    """A BM25 index searched in this process or in `tools.search.workers` worker processes, same hits either way.
    A subclass says which index (`index_spec`, which checks or builds it first) and how errors name it."""

    def __init__(self, config: SearchConfig):
        super().__init__(config)
        workers = _workers(config)
        self.spec: Spec = self.index_spec(config, in_workers=bool(workers))
        self.searcher = None if workers else open_searcher(self.spec)  # with workers, the index lives in them

    def index_spec(self, config: SearchConfig, in_workers: bool) -> Spec:
        raise NotImplementedError

    @property
    def where(self) -> str:
        """The index, as errors name it."""
        raise NotImplementedError

    async def search(self, query: str, k: int) -> list[Hit]:
        if self.searcher is None:
            return await search_in_workers(self.spec, self.config.workers, query, k, self.where)
        return self.searcher.search(query, k)


class LocalSearch(IndexSearch):
    """BM25 over the local web's page store; loads the index once per process (or once per worker)."""

    name = "local"
    label = "A search"

    def index_spec(self, config: SearchConfig, in_workers: bool) -> Spec:
        root = Path(config.web_root).resolve()
        if in_workers:  # only its presence is checked here; the workers load it
            LocalIndex.check(root)
        return ("local", str(root))

    @property
    def where(self) -> str:
        return f"the offline web in {self.spec[1]}"


def _workers(config: SearchConfig) -> int:
    if config.workers < 0:
        raise WebdancerError(f"tools.search.workers is {config.workers}: use 0 (search in this process) or a number of worker processes")
    return config.workers


class SerperSearch(SearchBackend):
    """Google results through Serper's API (POST JSON, X-API-KEY header, `organic` results)."""

    name = "serper"
    label = "A Google search"

    def __init__(self, config: SearchConfig):
        super().__init__(config)
        self.key = read_secret(config.api_key_env, "the serper search backend")
        self.client = httpx.AsyncClient(timeout=config.timeout_s)

    async def search(self, query: str, k: int) -> list[Hit]:
        cfg = self.config

        async def attempt() -> list[Hit]:
            resp = await self.client.post(cfg.serper_url, json={"q": query, "num": k}, headers={"X-API-KEY": self.key})
            if resp.status_code == 200:
                return self._hits(resp, k)
            if resp.status_code in (401, 403):
                raise WebdancerError(f"serper rejected the API key (HTTP {resp.status_code}); check {' or '.join(cfg.api_key_env)}")
            if resp.status_code in RETRY_STATUS:
                raise Retry(f"HTTP {resp.status_code}")
            raise WebdancerError(f"serper search failed (HTTP {resp.status_code})")

        try:
            return await with_retries(attempt, cfg.max_retries, cfg.backoff_s, breaker=BREAKERS.get(f"search backend {cfg.serper_url}"))
        except RetriesExhausted as exc:
            raise OutageError(f"serper search failed after {exc.attempts} tries ({exc.reason})") from None

    @staticmethod
    def _hits(resp: httpx.Response, k: int) -> list[Hit]:
        try:
            organic = resp.json().get("organic") or []
        except ValueError:
            raise WebdancerError("serper sent a reply that is not JSON") from None
        hits = []
        for item in organic[:k]:
            if not isinstance(item, dict) or not item.get("link"):
                continue
            snippet = item.get("snippet") or ""
            if item.get("date"):
                snippet = f"Date published: {item['date']}\n\n{snippet}"
            hits.append(Hit(item["link"], item.get("title") or item["link"], snippet, 0.0))
        return hits

    async def aclose(self) -> None:
        await self.client.aclose()


def format_results(label: str, query: str, hits: list[Hit]) -> str:
    """The reference layout: a header line, `## Web Results`, numbered [title](url) blocks with snippets."""
    if not hits:
        return f"No results found for '{query}'. Try a shorter or more general query."
    blocks = []
    for i, hit in enumerate(hits, start=1):
        snippet = hit.snippet.strip()
        blocks.append(f"{i}. [{hit.title}]({hit.url})" + (f"\n\n{snippet}" if snippet else ""))
    return f"{label} for '{query}' found {len(hits)} results:\n\n## Web Results\n" + "\n\n".join(blocks)


class SearchTool(Tool):
    name = "search"
    description = "Search the web: give a list of queries; each query returns its top results (title, URL, snippet)."
    parameters = {
        "type": "object",
        "properties": {
            "query": {
                "type": "array",
                "items": {"type": "string"},
                "description": "One or more complementary search queries.",
            }
        },
        "required": ["query"],
    }
    Config = SearchConfig
    volatile_options = frozenset({"web_root", "corpus_index_dir"})  # where this machine keeps the index, not what it holds

    def __init__(self, config: Optional[SearchConfig] = None, plugins: Any = None):
        super().__init__(config)
        from webdancer.plugins import get_plugins

        backend_cls = (plugins or get_plugins()).get("search_backends", self.config.backend)
        self.backend: SearchBackend = backend_cls(self.config)
        self.blocklist = Blocklist(self.config.blocklist, "tools.search.blocklist")

    async def call(self, arguments: dict[str, Any]) -> str:
        queries = [q.strip() for q in arguments["query"] if isinstance(q, str) and q.strip()]
        if not queries:
            return "[search] no query given: pass a list of non-empty query strings."
        queries = queries[: self.config.max_queries]

        async def one(q: str) -> str:
            k = self.config.top_k
            try:
                hits = await self.backend.search(q, k + BLOCKED_SPARE if self.blocklist else k)
                if self.blocklist:  # (matching costs ~13 µs a URL: only when there is a list)
                    hits = [h for h in hits if not self.blocklist.blocks(h.url, "search_results")][:k]
                return format_results(self.backend.label, q, hits)
            except OutageError:
                raise  # the backend is down: the rollout ends as an outage, not with this observation
            except WebdancerError as exc:
                return f"[search] '{q}' failed: {exc}"

        return SEPARATOR.join(await asyncio.gather(*(one(q) for q in queries)))

    async def aclose(self) -> None:
        await self.backend.aclose()


