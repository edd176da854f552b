"""Page readers for `visit`: `local` (fetch and extract, SSRF-guarded) and `jina` (Jina Reader), and the page cache."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Optional
from urllib.parse import urljoin

import httpx

from webdancer.breaker import BREAKERS
from webdancer.errors import OutageError
from webdancer.http import RetriesExhausted, Retry, with_retries
from webdancer.jsonl import atomic_write_text
from webdancer.keys import read_secret
from webdancer.typed import from_dict
from webdancer_web.config import VisitConfig
from webdancer_web.extract import extract
from webdancer_web.guard import approve, refusal


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


REDIRECT_STATUSES = (301, 302, 303, 307, 308)


async def _with_retries(config: VisitConfig, attempt, service: str = "", outage_reasons: tuple[str, ...] = ()):
    """The shared retry loop, with failures worded for the model ("timeout after 20 s").

    A reader that fetches through a service (`service`, e.g. Jina) pauses on that service's circuit
    breaker, and a final failure whose reason starts with one of `outage_reasons` is the service's
    outage (OutageError), not an answer about the page.
    """
    breaker = BREAKERS.get(service) if service else None
    try:
        return await with_retries(attempt, config.max_retries, config.backoff_s, breaker=breaker)
    except RetriesExhausted as exc:
        if outage_reasons and exc.reason.startswith(outage_reasons):
            raise OutageError(f"{service} failed after {exc.attempts} tries ({exc.reason})") from None
        reason = f"timeout after {config.timeout_s:g} s" if exc.reason == "timeout" else exc.reason
        raise FetchError(reason) from None


class LocalReader(PageReader):
    """Plain HTTP GET with every redirect hop re-checked by the SSRF guard, a size cap and a type check.

    Each request goes to the address the guard approved, never to a second lookup of the name.
    """

    name = "local"

    def __init__(self, config: VisitConfig):
        super().__init__(config)
        self.client = httpx.AsyncClient(
            timeout=config.timeout_s, follow_redirects=False, headers={"User-Agent": config.user_agent}
        )

    async def read(self, url: str) -> PageContent:
        current = url
        for _ in range(self.config.max_redirects + 1):
            approval = await approve(current, self.config.local_sites)
            if approval.problem:
                raise FetchError(f"refused: {approval.problem}")
            status, headers, body = await _with_retries(self.config, lambda u=current, a=approval.address: self._get(u, a))
            if status in REDIRECT_STATUSES and headers.get("location"):
                current = urljoin(current, headers["location"])
                continue
            if status >= 400:
                raise FetchError(f"HTTP {status}")
            return _decode(url, current, headers.get("content-type", ""), body)
        raise FetchError(f"more than {self.config.max_redirects} redirects")

    async def _get(self, url: str, address: str) -> tuple[int, httpx.Headers, bytes]:
        target, headers, extensions = pinned_request(url, address)
        async with self.client.stream("GET", target, headers=headers, extensions=extensions) as resp:
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


def pinned_request(url: str, address: str) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """`url` sent to `address`: the URL with the address as host, the name in `Host` and (https) in TLS SNI,
    where the certificate is checked against the name too."""
    parsed = httpx.URL(url)
    host = parsed.host
    target = parsed.copy_with(host=address)
    name = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets in Host
    default_port = 443 if parsed.scheme == "https" else 80
    host_header = name if parsed.port in (None, default_port) else f"{name}:{parsed.port}"
    return target, {"Host": host_header}, ({"sni_hostname": host} if parsed.scheme == "https" else {})


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


JINA_MARGIN_S = 5
JINA_OUTAGES = ("ConnectError", "jina HTTP", "timeout", "ReadError", "RemoteProtocolError", "WriteError")


def jina_page_error(resp: httpx.Response) -> Optional[str]:
    """Jina's own error about the target page ({"code": 422, "name": ..., "readableMessage": ...}), or None when
    the body is not Jina's error (a page, or a gateway's error page)."""
    if "json" not in resp.headers.get("content-type", ""):
        return None
    try:
        body = resp.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("code"), int) or body.get("code") in (401, 403, 429):
        return None
    said = body.get("readableMessage") or body.get("message")
    return str(said)[:300] if said else None


class JinaReader(PageReader):
    """The Jina Reader API: GET {jina_url}/{url} with a Bearer key; returns the page as markdown text."""

    name = "jina"

    def __init__(self, config: VisitConfig):
        super().__init__(config)
        self.key = read_secret(config.jina_api_key_env, "the jina page reader")
        self.client = httpx.AsyncClient(timeout=config.timeout_s)
        self.page_timeout_s = max(1, int(config.timeout_s) - JINA_MARGIN_S)  # Jina answers about a slow page before we give up on Jina

    async def read(self, url: str) -> PageContent:
        problem = await refusal(url, self.config.local_sites, resolve=False)
        if problem:
            raise FetchError(f"refused: {problem}")

        async def get() -> httpx.Response:
            resp = await self.client.get(
                f"{self.config.jina_url.rstrip('/')}/{url}",
                headers={"Authorization": f"Bearer {self.key}", "Accept": "text/plain", "X-Timeout": str(self.page_timeout_s)},
            )
            if resp.status_code == 429 or (resp.status_code >= 500 and jina_page_error(resp) is None):
                raise Retry(f"jina HTTP {resp.status_code}")
            return resp

        # What Jina says about the page (its JSON error naming the target: "Failed to goto ...: TimeoutError", any
        # status) is an answer about the page. Everything else that fails is the reader's outage: unreachable,
        # rate limiting, a 5xx without Jina's error (a gateway's 502/524), or no answer within timeout_s although
        # Jina was told (X-Timeout) to give up on the page a few seconds sooner.
        resp = await _with_retries(self.config, get, f"the jina reader at {self.config.jina_url}", JINA_OUTAGES)
        if (said := jina_page_error(resp)) is not None and resp.status_code >= 400:
            raise FetchError(f"jina could not read the page: {said}")
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
