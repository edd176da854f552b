"""HTTP for the hot path (model, judge and summarizer calls), retries, and the shared TLS context.

A rollout's model call is where the agent loop spends its own CPU. httpx/httpcore cost ~0.4 ms of
CPU per request here (anyio cancel scopes, h11 in pure Python, a pool that scans every connection
per request: encode/httpx#3215), which capped 256 concurrent rollouts at half of what a 50 ms
model allows. `KeepAlivePool` keeps HTTP/1.1 connections per origin as asyncio protocols that feed
httptools (the C parser uvicorn uses) straight from the socket, with one timer per request for its
deadline: stream readers and a timeout context per request had cost a fifth of the agent loop's CPU
per model call (benchmarks/agent_throughput.py). Errors are raised as httpx's exception types, so
callers and `with_retries` see one vocabulary.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import ssl
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar
from urllib.parse import urlsplit

import httptools
import httpx
import orjson

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
        """The body as JSON: orjson (a chat completion parsed in a fifth of json's time), and json for
        what orjson refuses but json reads (NaN, integers past 64 bits), so both raise ValueError alike."""
        try:
            return orjson.loads(self.content)
        except orjson.JSONDecodeError:
            return json.loads(self.content)


class _StaleConnection(Exception):
    """A kept-alive connection the server had closed: nothing was answered, so one fresh try is safe."""


class _Response:
    """httptools callbacks collecting one response."""

    __slots__ = ("status", "headers", "body", "complete", "headers_done", "keep_alive", "extra", "parser")

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.complete = self.headers_done = self.keep_alive = self.extra = False
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.extra = self.complete  # a second response nobody asked for, in the same bytes: out of step

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if not self.complete:
            self.headers_done = True
            self.status = self.parser.get_status_code()
            self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message completes

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, one request at a time. Bytes from the socket go straight into httptools and the
    waiting request is woken once, when its response is complete: no stream reader, no future per read, no
    timeout context per request (a timer on the deadline instead)."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop):
        self.origin, self.loop = origin, loop
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._response: _Response | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._head_only = self._reused = self._received = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:  # bytes nobody asked for: this connection is out of step with the server
            self.close()
            return
        if response.complete:  # more bytes after the answer, before its request resumed: answered, never reused
            response.extra = True
            return
        self._received = True
        try:
            response.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not response.complete:
                self._finish(httpx.RemoteProtocolError(f"{self._where} sent something that is not HTTP/1.1: {exc}"))
                return
            response.extra = True  # garbage after a complete answer in the same bytes
        if response.complete or (self._head_only and response.headers_done):
            self._finish(None)

    def eof_received(self) -> bool:
        self._ended(None)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)

    def _ended(self, exc: Exception | None) -> None:
        self.lost = True
        response = self._response
        if response is None:
            return
        if exc is not None:
            if not self._received and self._reused:
                self._finish(_StaleConnection())
            else:
                self._finish(httpx.ReadError(f"{self._where}: {getattr(exc, 'strerror', None) or exc}"))
        elif not self._received:
            self._finish(_StaleConnection() if self._reused else httpx.RemoteProtocolError(f"{self._where} closed the connection without a response"))
        elif response.headers_done and "content-length" not in response.headers and "transfer-encoding" not in response.headers:
            self._finish(None)  # a body delimited by the connection's close
        else:
            self._finish(httpx.RemoteProtocolError(f"{self._where} closed the connection in the middle of a response"))

    @property
    def _where(self) -> str:
        return f"{self.origin[1]}:{self.origin[2]}"

    def _finish(self, error: BaseException | None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    def _time_out(self) -> None:
        self._finish(asyncio.TimeoutError())

    async def exchange(self, data: bytes, head_only: bool, reused: bool, timeout_s: float) -> _Response:
        """Send one request and wait for its response; asyncio.TimeoutError after `timeout_s`. The caller
        (`KeepAlivePool._send`) closes the connection on any error or cancellation."""
        assert self.transport is not None
        response = self._response = _Response()
        self._head_only, self._reused, self._received = head_only, reused, False
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout_s, self._time_out)
        try:
            self.transport.write(data)
            await waiter
        finally:
            timer.cancel()
            self._response = self._waiter = None
        return response

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


@functools.lru_cache(maxsize=256)
def _request_head(method: str, url: str, headers: tuple[tuple[str, str], ...]) -> tuple[Origin, bytes]:
    """(origin, the request's head up to its Content-Length line): the same for every call of a client."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise httpx.UnsupportedProtocol(f"cannot request {url!r}: only http:// and https:// URLs with a host")
    default_port = 443 if parts.scheme == "https" else 80
    try:
        port = parts.port or default_port
    except ValueError:
        raise httpx.UnsupportedProtocol(f"cannot request {url!r}: the port is not a number") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = [f"{method} {target} HTTP/1.1", f"Host: {host if port == default_port else f'{host}:{port}'}"]
    head += [f"{k}: {v}" for k, v in headers if k.lower() not in ("host", "content-length")]
    return (parts.scheme, parts.hostname, port), ("\r\n".join(head) + "\r\n").encode("latin-1")


class KeepAlivePool:
    """HTTP/1.1 with kept-alive connections per origin (http and https), at most `max_connections` each.

    `timeout_s` bounds an exchange (request sent, full response read), `connect_timeout_s` the
    connection (TLS included). Plain Content-Length or chunked bodies; no proxies, no redirects
    (the endpoints it talks to are API servers named in config).
    """

    def __init__(self, timeout_s: float, connect_timeout_s: float, max_connections: int = 4096):
        self._timeout_s, self._connect_timeout_s = timeout_s, connect_timeout_s
        self._max_connections = max_connections
        # Keyed by event loop too: a connection or a semaphore belongs to the loop that made it, and a
        # client can outlive one `asyncio.run` and be used in the next.
        self._idle: dict[tuple[asyncio.AbstractEventLoop, Origin], list[_Connection]] = {}
        self._slots: dict[tuple[asyncio.AbstractEventLoop, Origin], asyncio.Semaphore] = {}
        self._closed = False

    async def request(self, method: str, url: str, content: bytes = b"", headers: dict[str, str] | None = None) -> RawResponse:
        origin, head = _request_head(method, url, tuple(headers.items()) if headers else ())
        data = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(content), content)
        key = (asyncio.get_running_loop(), origin)
        slots = self._slots.get(key)
        if slots is None:
            for old in [k for k in self._slots if k[0].is_closed()]:  # a finished asyncio.run: its connections are gone
                self._slots.pop(old)
                self._idle.pop(old, None)
            slots = self._slots[key] = asyncio.Semaphore(self._max_connections)
        async with slots:
            try:
                return await self._exchange(key, data, method == "HEAD")
            except asyncio.TimeoutError:
                raise httpx.ReadTimeout(f"no complete response from {origin[1]}:{origin[2]} within {self._timeout_s:g} s") from None

    async def _exchange(self, key: tuple[asyncio.AbstractEventLoop, Origin], data: bytes, head_only: bool) -> RawResponse:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.lost:
                conn.close()
                continue
            try:
                return await self._send(key, conn, data, head_only, reused=True)
            except _StaleConnection:
                continue
        conn = await self._connect(key)
        return await self._send(key, conn, data, head_only, reused=False)

    async def _connect(self, key: tuple[asyncio.AbstractEventLoop, Origin]) -> _Connection:
        loop, origin = key
        scheme, host, port = origin
        tls = shared_ssl_context() if scheme == "https" else None
        try:
            _, conn = await within(self._connect_timeout_s, loop.create_connection(lambda: _Connection(origin, loop), host, port, ssl=tls))
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} took over {self._connect_timeout_s:g} s") from None
        except OSError as exc:  # refused, unreachable, name not resolved, TLS handshake (ssl.SSLError)
            raise httpx.ConnectError(f"{host}:{port}: {exc.strerror or exc}") from None
        return conn

    async def _send(self, key: tuple[asyncio.AbstractEventLoop, Origin], conn: _Connection, data: bytes, head_only: bool, reused: bool) -> RawResponse:
        keep = False
        try:
            response = await conn.exchange(data, head_only, reused, self._timeout_s)
            keep = response.keep_alive and response.complete and not response.extra and not head_only
        finally:  # also on cancellation: a connection with a half-read response is never reused
            if keep and not self._closed and not conn.lost:
                self._idle.setdefault(key, []).append(conn)
            else:
                conn.close()
        return RawResponse(response.status, response.headers, b"".join(response.body))

    async def aclose(self) -> None:
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
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
