"""HTTP for the hot path (model, judge and summarizer calls), retries, and the shared TLS context.

A rollout's model call is where the agent loop spends its own CPU. httpx/httpcore cost ~0.4 ms of
CPU per request here (anyio cancel scopes, h11 in pure Python, a pool that scans every connection
per request: encode/httpx#3215), which capped 256 concurrent rollouts at half of what a 50 ms
model allows. `KeepAlivePool` keeps HTTP/1.1 connections per origin and parses responses with
httptools (the C parser uvicorn uses): ~0.07 ms per request, measured in benchmarks/agent_throughput.py.
Errors are raised as httpx's exception types, so callers and `with_retries` see one vocabulary.
"""

from __future__ import annotations

import asyncio
import functools
import random
import ssl
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar
from urllib.parse import urlsplit

import httptools
import httpx

from webdancer.aio import within

if TYPE_CHECKING:
    from webdancer.breaker import CircuitBreaker

T = TypeVar("T")
Origin = tuple[str, str, int]


@functools.lru_cache(maxsize=1)
def shared_ssl_context() -> ssl.SSLContext:
    """Loading the CA bundle costs ~20 ms; every connection shares one context."""
    return httpx.create_ssl_context()


class RawResponse:
    """The parts of a response the clients use (status, lower-case headers, body)."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes):
        self.status_code, self.headers, self.content = status_code, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        import json

        return json.loads(self.content)


class _StaleConnection(Exception):
    """A kept-alive connection the server had closed: nothing was answered, so one fresh try is safe."""


class _Response:
    """httptools callbacks collecting one response."""

    __slots__ = ("headers", "body", "complete", "headers_done", "keep_alive", "parser")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.complete = self.headers_done = self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message completes

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class KeepAlivePool:
    """HTTP/1.1 with kept-alive connections per origin (http and https), at most `max_connections` each.

    `timeout_s` bounds a whole exchange (request sent, full response read), `connect_timeout_s` the
    connection (TLS included). Plain Content-Length or chunked bodies; no proxies, no redirects
    (the endpoints it talks to are API servers named in config).
    """

    def __init__(self, timeout_s: float, connect_timeout_s: float, max_connections: int = 4096):
        self._timeout_s, self._connect_timeout_s = timeout_s, connect_timeout_s
        self._max_connections = max_connections
        # Keyed by event loop too: a connection or a semaphore belongs to the loop that made it, and a
        # client can outlive one `asyncio.run` and be used in the next.
        self._idle: dict[tuple[asyncio.AbstractEventLoop, Origin], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        self._slots: dict[tuple[asyncio.AbstractEventLoop, Origin], asyncio.Semaphore] = {}
        self._closed = False

    async def request(self, method: str, url: str, content: bytes = b"", headers: dict[str, str] | None = None) -> RawResponse:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise httpx.UnsupportedProtocol(f"cannot request {url!r}: only http:// and https:// URLs with a host")
        default_port = 443 if parts.scheme == "https" else 80
        try:
            port = parts.port or default_port
        except ValueError:
            raise httpx.UnsupportedProtocol(f"cannot request {url!r}: the port is not a number") from None
        origin = (parts.scheme, parts.hostname, port)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [f"{method} {target} HTTP/1.1", f"Host: {host if port == default_port else f'{host}:{port}'}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items() if k.lower() not in ("host", "content-length")]
        head.append(f"Content-Length: {len(content)}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + content
        key = (asyncio.get_running_loop(), origin)
        slots = self._slots.get(key)
        if slots is None:
            for old in [k for k in self._slots if k[0].is_closed()]:  # a finished asyncio.run: its connections are gone
                self._slots.pop(old)
                self._idle.pop(old, None)
            slots = self._slots[key] = asyncio.Semaphore(self._max_connections)
        async with slots:
            try:
                return await within(self._timeout_s, self._exchange(key, data, method == "HEAD"))
            except asyncio.TimeoutError:
                raise httpx.ReadTimeout(f"no complete response from {parts.hostname}:{port} within {self._timeout_s:g} s") from None

    async def _exchange(self, key: tuple[asyncio.AbstractEventLoop, Origin], data: bytes, head_only: bool) -> RawResponse:
        idle = self._idle.get(key)
        while idle:
            reader, writer = idle.pop()
            if writer.is_closing() or reader.at_eof():
                writer.close()
                continue
            try:
                return await self._send(key, reader, writer, data, head_only, reused=True)
            except _StaleConnection:
                continue
        reader, writer = await self._connect(key[1])
        return await self._send(key, reader, writer, data, head_only, reused=False)

    async def _connect(self, origin: Origin) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        scheme, host, port = origin
        tls = shared_ssl_context() if scheme == "https" else None
        try:
            return await within(self._connect_timeout_s, asyncio.open_connection(host, port, ssl=tls, limit=2**20))
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} took over {self._connect_timeout_s:g} s") from None
        except OSError as exc:  # refused, unreachable, name not resolved, TLS handshake (ssl.SSLError)
            raise httpx.ConnectError(f"{host}:{port}: {exc.strerror or exc}") from None

    async def _send(self, key: tuple[asyncio.AbstractEventLoop, Origin], reader, writer, data: bytes, head_only: bool, reused: bool) -> RawResponse:
        origin = key[1]
        response = _Response()
        parser = response.parser
        received = False
        keep = False
        try:
            writer.write(data)
            while not (response.complete or (head_only and response.headers_done)):
                chunk = await reader.read(65536)
                if not chunk:
                    if not received:
                        if reused:
                            raise _StaleConnection()
                        raise httpx.RemoteProtocolError(f"{origin[1]}:{origin[2]} closed the connection without a response")
                    if response.headers_done and "content-length" not in response.headers and "transfer-encoding" not in response.headers:
                        break  # a body delimited by the connection's close
                    raise httpx.RemoteProtocolError(f"{origin[1]}:{origin[2]} closed the connection in the middle of a response")
                received = True
                parser.feed_data(chunk)
            keep = response.keep_alive and response.complete and not head_only
        except httptools.HttpParserError as exc:
            raise httpx.RemoteProtocolError(f"{origin[1]}:{origin[2]} sent something that is not HTTP/1.1: {exc}") from None
        except (ConnectionError, OSError) as exc:
            if not received and reused:
                raise _StaleConnection() from None
            raise httpx.ReadError(f"{origin[1]}:{origin[2]}: {exc.strerror or exc}") from None
        finally:  # also on cancellation: a connection with a half-read response is never reused
            if keep and not self._closed:
                self._idle.setdefault(key, []).append((reader, writer))
            else:
                writer.close()
        return RawResponse(parser.get_status_code(), response.headers, b"".join(response.body))

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for _, writer in conns:
                writer.close()
        self._idle.clear()


class Retry(Exception):
    """Raised by one attempt to ask for another; `delay_s` overrides the backoff (e.g. Retry-After)."""

    def __init__(self, reason: str, delay_s: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.delay_s = delay_s


class RetriesExhausted(Exception):
    def __init__(self, reason: str, attempts: int):
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    max_retries: int,
    backoff_s: float,
    on_retry: Callable[[str, int, float], None] | None = None,
    breaker: CircuitBreaker | None = None,
) -> T:
    """Run `attempt` until it returns; each `Retry` it raises waits (jittered exponential backoff) and tries again.

    Transport errors and timeouts count as `Retry`. Any other exception passes straight through.
    With a `breaker` (the endpoint's), attempts wait while it is open, and a failure that opened it
    or happened while it was open does not use up a retry: the request waits for the endpoint
    instead (or until the breaker gives up with OutageError).
    """
    number = 0
    while True:
        probe = await breaker.admit() if breaker is not None else False
        try:
            result = await attempt()
        except httpx.TimeoutException:
            retry = Retry("timeout")
        except httpx.TransportError as exc:
            retry = Retry(f"{type(exc).__name__}: {exc}".rstrip(": "))
        except Retry as exc:
            retry = exc
        except Exception:
            if breaker is not None:
                breaker.success(probe)  # the endpoint answered, with something that is not ours to retry
            raise
        except BaseException:
            if breaker is not None:
                breaker.release(probe)
            raise
        else:
            if breaker is not None:
                breaker.success(probe)
            return result
        if breaker is not None:
            breaker.failure(retry.reason, probe)
            if breaker.is_open:
                continue  # paused: admit() waits for the endpoint, then this request tries again
        number += 1
        if number > max_retries:
            raise RetriesExhausted(retry.reason, number)
        delay = retry.delay_s if retry.delay_s is not None else backoff_s * (2 ** (number - 1)) * (0.5 + random.random())
        if on_retry is not None:
            on_retry(retry.reason, number, delay)
        await asyncio.sleep(delay)
