"""The `visit` tool (reference schema: URLs + goal): read pages with a reader, return goal-relevant evidence and a summary."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

import httpx

from webdancer.config import ModelConfig
from webdancer.errors import OutageError, WebdancerError
from webdancer.leaks import Blocklist
from webdancer.llm import ChatClient
from webdancer.prompt_template import PromptTemplate
from webdancer.records import Message
from webdancer.tools import Tool
from webdancer_web.config import VisitConfig
from webdancer_web.evidence import extractive_evidence, format_visit, parse_extractor_reply
from webdancer_web.guard import host_key
from webdancer_web.readers import FetchError, PageCache, PageContent, PageReader
from webdancer_web.search import SEPARATOR


class VisitTool(Tool):
    name = "visit"
    description = "Visit web pages and return the evidence and summary they hold for a goal."
    parameters = {
        "type": "object",
        "properties": {
            "url": {"type": "array", "items": {"type": "string"}, "description": "The URL(s) of the page(s) to visit."},
            "goal": {"type": "string", "description": "What information to look for in the page(s)."},
        },
        "required": ["url", "goal"],
    }
    Config = VisitConfig
    volatile_options = frozenset({"user_agent", "corpus_index_dir"})

    def __init__(self, config: Optional[VisitConfig] = None, plugins: Any = None):
        super().__init__(config)
        from webdancer.options import validate_options
        from webdancer.plugins import get_plugins

        reader_cls = (plugins or get_plugins()).get("page_readers", self.config.reader)
        self.reader: PageReader = reader_cls(self.config)
        self.cache = PageCache(self.config.cache_dir)
        self.blocklist = Blocklist(self.config.blocklist, "tools.visit.blocklist")
        self._host_slots: dict[str, asyncio.Semaphore] = {}
        self.summarizer: Optional[ChatClient] = None
        if self.config.summary_model:
            model = validate_options(ModelConfig, self.config.summary_model, "tools.visit.summary_model")
            model.stop = []
            self.summarizer = ChatClient(model)
        self.prompt = PromptTemplate.load(self.config.summary_prompt_file, "webdancer_web", "prompts/extractor.txt", ("content", "goal"))

    async def fetch(self, url: str) -> PageContent:
        cached = self.cache.get(self.reader.name, url)
        if cached is not None:
            return cached
        slot = self._host_slots.setdefault(host_key(url), asyncio.Semaphore(self.config.per_host_concurrency))
        async with slot:
            page = await self.reader.read(url)
        self.cache.put(self.reader.name, page)
        return page

    async def _summarize(self, page: PageContent, goal: str) -> tuple[str, str]:
        budget = self.config.max_tokens * 4
        if self.summarizer is not None:
            content = page.text[: self.config.max_page_chars]
            prompt = self.prompt.fill(content=content, goal=goal)
            for _ in range(2):
                try:
                    reply = await self.summarizer.chat([Message("user", prompt)])
                except OutageError:
                    raise  # the summarizer is down: an outage, not a page summarized another way
                except WebdancerError:
                    break
                data = parse_extractor_reply(reply.text)
                if data is not None:
                    return data["evidence"][:budget], data["summary"][: budget // 4]
        return extractive_evidence(page.text, goal, budget)

    async def _one(self, url: str, goal: str) -> str:
        if self.blocklist.blocks(url, "visits"):
            return f"[visit] {url} is blocked during this evaluation (it may hold the benchmark's answers); find the facts elsewhere."
        start = time.perf_counter()
        try:
            page = await self.fetch(url)
        except FetchError as exc:
            return f"[visit] could not fetch {url}: {exc}"
        except httpx.HTTPError as exc:
            return f"[visit] could not fetch {url}: {type(exc).__name__} after {time.perf_counter() - start:.1f} s"
        if not page.text.strip():
            return f"[visit] {url} has no readable text."
        evidence, summary = await self._summarize(page, goal)
        return format_visit(url, goal, evidence, summary)

    async def call(self, arguments: dict[str, Any]) -> str:
        urls = [u.strip() for u in arguments["url"] if isinstance(u, str) and u.strip()][: self.config.max_urls]
        if not urls:
            return "[visit] no URL given: pass a list of URLs."
        goal = arguments["goal"].strip() or "the main facts of the page"
        return SEPARATOR.join(await asyncio.gather(*(self._one(u, goal) for u in urls)))

    async def aclose(self) -> None:
        await self.reader.aclose()
        if self.summarizer is not None:
            await self.summarizer.aclose()
