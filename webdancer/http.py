"""HTTP to API endpoints (model, judge and summarizer calls), retries, and the shared TLS context."""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import random
import ssl
import weakref
from typing import TYPE_CHECKING, Any, Awaitable, Callable, TypeVar
from urllib.parse import urlsplit

import aiohttp
import httpx
import orjson

from webdancer.aio import within

if TYPE_CHECKING:
    from webdancer.breaker import CircuitBreaker

T = TypeVar("T")
KEEPALIVE_S = 4.0  # under the 5 s after which uvicorn-based servers (SGLang, vLLM) close an idle connection


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


def is_loopback(host: str) -> bool:
    """Whether a URL's or a server's host names this machine's loopback ("localhost", 127.0.0.0/8, ::1, "[::1]")."""
    import ipaddress

    name = host.strip().lower().removeprefix("[").removesuffix("]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HttpClient:
    """HTTP for one API endpoint (a model, judge or summarizer): aiohttp's kept-alive pool, errors raised as httpx's types
    so `with_retries` and the callers see one vocabulary.

    Why aiohttp and not httpx (which the web tools use): httpcore's pool walks every connection for every
    request (encode/httpx#3215); measured in one run on 2 cores (2026-12-07, the agent loop against a fake model,
    64 concurrent rollouts, 50 ms turns), CPU per model call: httpx 8.7 ms (the loop held 0.10 of its limit),
    aiohttp 0.45 ms, the raw-asyncio client this replaced 0.27 ms. At 1,024 concurrent rollouts with 1 s turns
    aiohttp held 1.02 of the limit (the old client 1.01): benchmarks/agent_throughput.py.
    Proxies come from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), except for loopback endpoints (a
    model served on this machine), never sent to a proxy. HTTP/1.1 only: aiohttp has no HTTP/2. A POST on a
    kept-alive connection the server has just closed fails as a transport error, which `with_retries` retries
    (RFC 9112 9.3.1: a client does not resend a non-idempotent request by itself); KEEPALIVE_S keeps that rare.
    One session per event loop: a client made once can serve consecutive `asyncio.run`s.
    """

    def __init__(self, timeout_s: float, connect_timeout_s: float, max_connections: int = 4096):
        self._timeout_s, self._connect_timeout_s = timeout_s, connect_timeout_s
        self._max_connections = max_connections
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        _CLIENTS.add(self)

    async def _session(self, url: str) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None:
            for old in [old for old in self._sessions if old.is_closed()]:
                await _forget(self._sessions.pop(old))
            host = (urlsplit(url).hostname or "").lower()
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0, ssl=shared_ssl_context(),
                                             keepalive_timeout=KEEPALIVE_S)
            session = self._sessions[loop] = aiohttp.ClientSession(
                connector=connector, trust_env=not is_loopback(host),  # proxies from the environment, never for loopback
                timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout_s))  # the whole call: `request`'s deadline
        return session

    async def request(self, method: str, url: str, content: bytes = b"", headers: dict[str, str] | None = None) -> RawResponse:
        parts = urlsplit(url)
        try:
            parts.port
        except ValueError:
            raise httpx.UnsupportedProtocol(f"cannot request {url!r}: the port is not a number") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise httpx.UnsupportedProtocol(f"cannot request {url!r}: only http:// and https:// URLs with a host")
        where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        try:
            return await within(self._timeout_s, self._exchange(method, url, content, headers))
        except asyncio.TimeoutError:
            raise httpx.ReadTimeout(f"no complete response from {where} within {self._timeout_s:g} s") from None
        except aiohttp.ConnectionTimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {where} took over {self._connect_timeout_s:g} s") from None
        except aiohttp.ClientConnectorError as exc:  # refused, unreachable, name not resolved, TLS handshake
            cause = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None) or exc
            raise httpx.ConnectError(f"{where}: {getattr(cause, 'strerror', None) or cause}") from None
        except aiohttp.ClientHttpProxyError as exc:  # the proxy from HTTPS_PROXY/HTTP_PROXY answered, not the endpoint
            raise httpx.ProxyError(f"the proxy refused the request to {where}: HTTP {exc.status} {exc.message}") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise httpx.RemoteProtocolError(f"{where} closed the connection before a complete response ({type(exc).__name__})") from None
        except aiohttp.ClientResponseError as exc:  # a reply aiohttp's parser refuses
            raise httpx.RemoteProtocolError(f"{where} sent something that is not HTTP/1.1: {exc.message}") from None
        except aiohttp.ClientError as exc:
            raise httpx.ReadError(f"{where}: {type(exc).__name__}: {exc}") from None

    async def _exchange(self, method: str, url: str, content: bytes, headers: dict[str, str] | None) -> RawResponse:
        session = await self._session(url)
        async with session.request(method, url, data=content, headers=headers, allow_redirects=False) as resp:
            body = await resp.read()
            return RawResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, body)

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        for owner, session in list(self._sessions.items()):
            await (session.close() if owner is loop else _forget(session))
        self._sessions.clear()


_CLIENTS: "weakref.WeakSet[HttpClient]" = weakref.WeakSet()


@atexit.register
def _retire_at_exit() -> None:
    """At exit, retire the sessions of finished event loops (a client used inside `asyncio.run` and never closed):
    otherwise aiohttp prints "Unclosed client session" and "Unclosed connector" for each as the process ends."""
    stale = [(client, loop) for client in list(_CLIENTS) for loop in list(client._sessions) if loop.is_closed()]
    if stale:
        async def retire() -> None:
            for client, loop in stale:
                await _forget(client._sessions.pop(loop))

        asyncio.run(retire())


async def _forget(session: aiohttp.ClientSession) -> None:
    """Retire a session whose event loop has finished: its connections went with the loop, so nothing is sent
    (the connector closes without touching the dead loop), and neither warns of being left unclosed."""
    connector = session.connector
    session.detach()
    if connector is not None:
        await connector.close()


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
