"""A polite breadth-first crawler over real HTTP: same-site links, depth/page limits, robots.txt, resumable."""

from __future__ import annotations

import asyncio
import urllib.robotparser
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urldefrag, urljoin, urlsplit, urlunsplit

import httpx
from webdancer_web.extract import extract
from webdancer_web.readers import REDIRECT_STATUSES

from webdancer.errors import WebdancerError
from webdancer.jsonl import JsonlAppender, iter_json_lines


@dataclass
class CrawledPage:
    url: str
    title: str
    text: str
    links: list[str] = field(default_factory=list)
    depth: int = 0


def canonical(url: str) -> str:
    """One spelling per page: no fragment, lower-case scheme/host, default ports dropped, index.html kept."""
    url = urldefrag(url)[0]
    p = urlsplit(url)
    host = (p.hostname or "").lower()
    port = p.port
    netloc = host if port in (None, 80 if p.scheme == "http" else 443) else f"{host}:{port}"
    return urlunsplit((p.scheme.lower(), netloc, p.path or "/", p.query, ""))


MAX_REDIRECTS = 5


def same_site(url: str, root: str) -> bool:
    """Inside the root's host and path prefix (a site may live under /<name>/ of a shared host)."""
    u, r = urlsplit(url), urlsplit(root)
    prefix = r.path if r.path.endswith("/") else r.path.rsplit("/", 1)[0] + "/"
    return (u.scheme, u.netloc) == (r.scheme, r.netloc) and u.path.startswith(prefix)


@dataclass
class CrawlConfig:
    root_url: str = ""
    max_pages: int = 500
    max_depth: int = 4
    concurrency: int = 4
    delay_s: float = 0.0
    respect_robots: bool = True
    timeout_s: float = 20.0
    user_agent: str = "webdancer-crawler/0.1"


async def crawl(cfg: CrawlConfig, store: Path, progress: Optional[Callable[[int], None]] = None) -> list[CrawledPage]:
    """Crawl from `cfg.root_url` into `store` (append-only JSONL); a rerun continues where it stopped."""
    root = canonical(cfg.root_url)
    if urlsplit(root).scheme not in ("http", "https"):
        raise WebdancerError(f"crawl root {cfg.root_url!r} is not an http(s) URL")
    pages: dict[str, CrawledPage] = {}
    if store.exists():
        for _, obj in iter_json_lines(store):
            pages[obj["url"]] = CrawledPage(**obj)
    sink = JsonlAppender(store, key=lambda r: r["url"])
    headers = {"User-Agent": cfg.user_agent}
    # Redirects are followed by hand, and only inside the site: a page must not send the crawler elsewhere
    # (an internal address, another host) on the operator's behalf.
    async with httpx.AsyncClient(timeout=cfg.timeout_s, follow_redirects=False, headers=headers) as client:
        robots = await _robots(client, root) if cfg.respect_robots else None
        seen: set[str] = set(pages)
        queue: deque[tuple[str, int]] = deque()
        if not pages:
            queue.append((root, 0))
            seen.add(root)
        for page in pages.values():  # the frontier left by an earlier run
            for link in page.links:
                if link not in seen and page.depth + 1 <= cfg.max_depth:
                    seen.add(link)
                    queue.append((link, page.depth + 1))
        failures: list[str] = []
        slots = asyncio.Semaphore(cfg.concurrency)

        async def fetch(url: str, depth: int) -> Optional[CrawledPage]:
            async with slots:
                if cfg.delay_s:
                    await asyncio.sleep(cfg.delay_s)
                current = url
                for _ in range(MAX_REDIRECTS + 1):
                    try:
                        resp = await client.get(current)
                    except httpx.HTTPError as exc:
                        failures.append(f"{url}: {type(exc).__name__}")
                        return None
                    if resp.status_code not in REDIRECT_STATUSES or "location" not in resp.headers:
                        break
                    target = canonical(urljoin(current, resp.headers["location"]))
                    if not same_site(target, root):
                        failures.append(f"{url}: redirected off the site, to {target} (not followed)")
                        return None
                    current = target
            final = canonical(str(resp.url))
            if resp.status_code != 200 or "html" not in resp.headers.get("content-type", ""):
                failures.append(f"{url}: HTTP {resp.status_code}")
                return None
            ex = extract(resp.text, final)
            links = []
            for link in ex.links:
                link = canonical(link)
                if same_site(link, root) and link != final and link not in links:
                    links.append(link)
            return CrawledPage(final, ex.title, ex.text, links, depth)

        while queue and len(pages) < cfg.max_pages:
            batch = []
            while queue and len(batch) < cfg.concurrency and len(pages) + len(batch) < cfg.max_pages:
                batch.append(queue.popleft())
            # Fetched concurrently, recorded in queue order: the same config crawls the same pages in
            # the same order however the fetches interleave, so a resumed crawl matches a clean one.
            for page in await asyncio.gather(*(fetch(u, d) for u, d in batch)):
                if page is None or page.url in pages:
                    continue
                pages[page.url] = page
                sink.write(asdict(page))
                if progress:
                    progress(len(pages))
                for link in page.links:
                    allowed = robots is None or robots.can_fetch(cfg.user_agent, link)
                    if link not in seen and page.depth + 1 <= cfg.max_depth and allowed:
                        seen.add(link)
                        queue.append((link, page.depth + 1))
    sink.close()
    if not pages:
        detail = f" ({failures[0]})" if failures else ""
        raise WebdancerError(f"crawl of {cfg.root_url} found no HTML pages{detail}; check the URL and that the site is served")
    return list(pages.values())


async def _robots(client: httpx.AsyncClient, root: str) -> Optional[urllib.robotparser.RobotFileParser]:
    parts = urlsplit(root)
    try:
        resp = await client.get(f"{parts.scheme}://{parts.netloc}/robots.txt")
    except httpx.HTTPError as exc:
        raise WebdancerError(f"cannot reach {parts.scheme}://{parts.netloc} ({type(exc).__name__}); is the site up?") from None
    if resp.status_code != 200:
        return None
    parser = urllib.robotparser.RobotFileParser()
    parser.parse(resp.text.splitlines())
    return parser


def load_crawl(store: Path) -> list[CrawledPage]:
    return [CrawledPage(**obj) for _, obj in iter_json_lines(store)]
