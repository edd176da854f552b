"""The `visit` tool (reference schema: URLs + goal): read pages, extract goal-relevant evidence and a summary."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional
from urllib.parse import urljoin

import bm25s
import httpx

from webdancer.config import ModelConfig, read_secret
from webdancer.errors import WebdancerError
from webdancer.http import RetriesExhausted, Retry, with_retries
from webdancer.jsonl import atomic_write_text
from webdancer.llm import ChatClient, parse_json_object
from webdancer.prompt_template import PromptTemplate
from webdancer.records import Message
from webdancer.tools import Tool
from webdancer.typed import from_dict
from webdancer_web.extract import extract
from webdancer_web.guard import host_key, refusal
from webdancer_web.search import SEPARATOR


@dataclass
class VisitConfig:
    reader: str = "local"
    # host:port of the local sites that may be fetched even though they are on loopback.
    local_sites: list[str] = field(default_factory=lambda: ["127.0.0.1:8765"])
    timeout_s: float = 20.0
    max_retries: int = 2
    backoff_s: float = 0.5
    max_bytes: int = 5_000_000
    max_redirects: int = 5
    per_host_concurrency: int = 4
    max_urls: int = 5
    cache_dir: Optional[str] = ".webdancer/cache/visit"
    # The answer per URL is cut to about this many tokens (chars / 4).
    max_tokens: int = 1500
    # Summary model: an OpenAI-compatible endpoint (ModelConfig fields); empty = extractive fallback.
    summary_model: dict[str, Any] = field(default_factory=dict)
    summary_prompt_file: Optional[str] = None
    max_page_chars: int = 60_000
    jina_url: str = "https://r.jina.ai"
    jina_api_key_env: list[str] = field(default_factory=lambda: ["JINA_API_KEY"])
    user_agent: str = "webdancer/0.1 (+https://github.com/webdancer)"


@dataclass
class PageContent:
    url: str
    final_url: str
    title: str
    text: str


class FetchError(Exception):
    """A page could not be read; the message is shown to the model."""


class PageReader:
    """Subclass, set `name`, implement `read(url) -> PageContent`; raise FetchError for readable failures."""

    name: ClassVar[str]

    def __init__(self, config: VisitConfig):
        self.config = config

    async def read(self, url: str) -> PageContent:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close clients."""


async def _with_retries(config: VisitConfig, attempt):
    """The shared retry loop, with failures worded for the model ("timeout after 20 s")."""
    try:
        return await with_retries(attempt, config.max_retries, config.backoff_s)
    except RetriesExhausted as exc:
        reason = f"timeout after {config.timeout_s:g} s" if exc.reason == "timeout" else exc.reason
        raise FetchError(reason) from None


class LocalReader(PageReader):
    """Plain HTTP GET with every redirect hop re-checked by the SSRF guard, a size cap and a type check."""

    name = "local"

    def __init__(self, config: VisitConfig):
        super().__init__(config)
        self.client = httpx.AsyncClient(
            timeout=config.timeout_s, follow_redirects=False, headers={"User-Agent": config.user_agent}
        )

    async def read(self, url: str) -> PageContent:
        current = url
        for _ in range(self.config.max_redirects + 1):
            problem = await refusal(current, self.config.local_sites)
            if problem:
                raise FetchError(f"refused: {problem}")
            status, headers, body = await _with_retries(self.config, lambda u=current: self._get(u))
            if status in (301, 302, 303, 307, 308) and headers.get("location"):
                current = urljoin(current, headers["location"])
                continue
            if status >= 400:
                raise FetchError(f"HTTP {status}")
            return _decode(url, current, headers.get("content-type", ""), body)
        raise FetchError(f"more than {self.config.max_redirects} redirects")

    async def _get(self, url: str) -> tuple[int, httpx.Headers, bytes]:
        async with self.client.stream("GET", url) as resp:
            if resp.status_code in (429,) or resp.status_code >= 500:
                raise Retry(f"HTTP {resp.status_code}")
            declared = int(resp.headers.get("content-length") or 0)
            if declared > self.config.max_bytes:
                raise FetchError(f"page too large ({declared} bytes > {self.config.max_bytes})")
            chunks, size = [], 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > self.config.max_bytes:
                    raise FetchError(f"page too large (over {self.config.max_bytes} bytes)")
                chunks.append(chunk)
            return resp.status_code, resp.headers, b"".join(chunks)

    async def aclose(self) -> None:
        await self.client.aclose()


def _decode(url: str, final_url: str, content_type: str, body: bytes) -> PageContent:
    ctype = content_type.split(";")[0].strip().lower()
    charset = re.search(r"charset=([\w-]+)", content_type)
    encoding = charset.group(1) if charset else "utf-8"
    if ctype in ("text/html", "application/xhtml+xml", "") and not body[:5] == b"%PDF-":
        try:
            html = body.decode(encoding, errors="replace")
        except LookupError:
            html = body.decode("utf-8", errors="replace")
        page = extract(html, final_url, with_links=False)
        return PageContent(url, final_url, page.title, page.text)
    if ctype.startswith("text/") or ctype in ("application/json", "application/xml"):
        return PageContent(url, final_url, "", body.decode(encoding, errors="replace"))
    if ctype == "application/pdf" or body[:5] == b"%PDF-":
        return PageContent(url, final_url, "", _pdf_text(body))
    raise FetchError(f"unsupported content type '{ctype}'")


def _pdf_text(body: bytes) -> str:
    try:
        import io

        from pypdf import PdfReader
    except ImportError:
        raise FetchError("the page is a PDF; install pypdf to read PDFs") from None
    try:
        reader = PdfReader(io.BytesIO(body))
        return "\n\n".join(page.extract_text() or "" for page in reader.pages[:50])
    except Exception as exc:
        raise FetchError(f"unreadable PDF ({type(exc).__name__})") from None


class JinaReader(PageReader):
    """The Jina Reader API: GET {jina_url}/{url} with a Bearer key; returns the page as markdown text."""

    name = "jina"

    def __init__(self, config: VisitConfig):
        super().__init__(config)
        self.key = read_secret(config.jina_api_key_env, "the jina page reader")
        self.client = httpx.AsyncClient(timeout=config.timeout_s)

    async def read(self, url: str) -> PageContent:
        problem = await refusal(url, self.config.local_sites, resolve=False)
        if problem:
            raise FetchError(f"refused: {problem}")

        async def get() -> httpx.Response:
            resp = await self.client.get(
                f"{self.config.jina_url.rstrip('/')}/{url}",
                headers={"Authorization": f"Bearer {self.key}", "Accept": "text/plain"},
            )
            if resp.status_code == 429 or resp.status_code >= 500:
                raise Retry(f"jina HTTP {resp.status_code}")
            return resp

        resp = await _with_retries(self.config, get)
        if resp.status_code in (401, 403):
            raise FetchError(f"jina rejected the API key (HTTP {resp.status_code}); check {' or '.join(self.config.jina_api_key_env)}")
        if resp.status_code >= 400:
            raise FetchError(f"jina HTTP {resp.status_code}")
        if len(resp.content) > self.config.max_bytes:
            raise FetchError(f"page too large (over {self.config.max_bytes} bytes)")
        text = resp.text
        title = ""
        match = re.match(r"Title:\s*(.*)", text)
        if match:
            title = match.group(1).strip()
        marker = "Markdown Content:"
        if marker in text:
            text = text.split(marker, 1)[1]
        return PageContent(url, url, title, text.strip())

    async def aclose(self) -> None:
        await self.client.aclose()


class PageCache:
    """Fetched pages on disk, keyed by reader and URL: reruns are reproducible and cost no fetches."""

    def __init__(self, folder: Optional[str]):
        self.folder = Path(folder) if folder else None

    def _path(self, reader: str, url: str) -> Path:
        digest = hashlib.sha1(f"{reader}\x1f{url}".encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.json"  # type: ignore[operator]

    def get(self, reader: str, url: str) -> Optional[PageContent]:
        if self.folder is None:
            return None
        path = self._path(reader, url)
        if not path.is_file():
            return None
        try:
            return from_dict(PageContent, json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            return None  # a damaged entry is refetched

    def put(self, reader: str, page: PageContent) -> None:
        if self.folder is not None:
            atomic_write_text(self._path(reader, page.url), json.dumps(asdict(page), ensure_ascii=False))


# --- turning page text into evidence + summary for a goal ---

_PARA = re.compile(r"\n\s*\n|\n(?=[•*\-] )")


def passages(text: str, target: int = 500) -> list[str]:
    """Paragraph-sized passages: short paragraphs merged up to ~`target` chars, long ones kept whole."""
    out, buf = [], ""
    for para in (p.strip() for p in re.split(r"\n+", text)):
        if not para:
            continue
        buf = f"{buf}\n{para}" if buf else para
        if len(buf) >= target:
            out.append(buf)
            buf = ""
    if buf:
        out.append(buf)
    return out


def extractive_evidence(text: str, goal: str, budget_chars: int) -> tuple[str, str]:
    """BM25-rank the page's passages against the goal; evidence = the best ones in page order."""
    parts = passages(text)
    if not parts:
        return "", "The page has no readable text."
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(parts, stopwords="en", show_progress=False), show_progress=False)
    query = bm25s.tokenize([goal], stopwords="en", show_progress=False)
    order: list[int] = []
    if any(len(ids) for ids in query.ids):
        docs, sc = retriever.retrieve(query, k=len(parts), show_progress=False, n_threads=1)
        order = [int(d) for d, s in zip(docs[0], sc[0]) if s > 0]
    if not order:  # nothing matches the goal: the page opening is the honest evidence
        evidence = "\n".join(parts)[:budget_chars]
        opening = " ".join(re.split(r"(?<=[.!?])\s+", " ".join(parts[:2]))[:2])
        return evidence, "The page does not clearly address the goal. It begins: " + opening[:400]
    chosen, used = [], 0
    for idx in order:
        if used + len(parts[idx]) > budget_chars and chosen:
            continue
        chosen.append(idx)
        used += len(parts[idx])
        if used >= budget_chars:
            break
    evidence = "\n".join(parts[i] for i in sorted(chosen))[:budget_chars]
    top = parts[order[0]]
    sentences = re.split(r"(?<=[.!?])\s+", top)
    return evidence, " ".join(sentences[:2]).strip()


def _parse_llm_json(text: str) -> Optional[dict[str, str]]:
    """The extractor's reply: a JSON object with string `summary` and `evidence` (a string or a list)."""
    data = parse_json_object(text)
    if data is None or not isinstance(data.get("evidence"), (str, list)) or not isinstance(data.get("summary"), str):
        return None
    if isinstance(data["evidence"], list):
        data["evidence"] = "\n".join(str(x) for x in data["evidence"])
    return data


def format_visit(url: str, goal: str, evidence: str, summary: str) -> str:
    return (
        f"The useful information in {url} for user goal {goal} as follows: \n\n"
        f"Evidence in page: \n{evidence}\n\nSummary: \n{summary}\n\n"
    )


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

    def __init__(self, config: Optional[VisitConfig] = None, plugins: Any = None):
        super().__init__(config)
        from webdancer.config import validate_options
        from webdancer.plugins import get_plugins

        reader_cls = (plugins or get_plugins()).get("page_readers", self.config.reader)
        self.reader: PageReader = reader_cls(self.config)
        self.cache = PageCache(self.config.cache_dir)
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
                except WebdancerError:
                    break
                data = _parse_llm_json(reply.text)
                if data is not None:
                    return data["evidence"][:budget], data["summary"][: budget // 4]
        return extractive_evidence(page.text, goal, budget)

    async def _one(self, url: str, goal: str) -> str:
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
