"""webdancer.http.HttpClient (aiohttp underneath) against real sockets on loopback, each server answering byte for
byte what the test scripts: keep-alive reuse, chunked and close-delimited bodies, a connection the server closed
while idle, timeouts, garbage, cancellation, proxies from the environment; errors in httpx's vocabulary."""

import asyncio

import httpx
import pytest

from webdancer.http import HttpClient, RawResponse


class RawServer:
    """Accepts connections on 127.0.0.1; `reply(request_head, connection_number)` gives the bytes to send
    back (None: close without answering). Counts connections and keeps the heads it read."""

    def __init__(self, reply, close_after_each=False, delay_s=0.0):
        self.reply, self.close_after_each, self.delay_s = reply, close_after_each, delay_s
        self.connections = 0
        self.heads: list[str] = []

    async def handle(self, reader, writer):
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                length = next((int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith("content-length:")), 0)
                await reader.readexactly(length)
                self.heads.append(head)
                await asyncio.sleep(self.delay_s)
                data = self.reply(head, number)
                if data is None:
                    break
                writer.write(data)
                await writer.drain()
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/chat"
        return self

    async def __aexit__(self, *exc):
        self.server.close()


def ok(body=b'{"ok": true}', extra=""):
    return f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_connections_are_kept_alive_and_requests_well_formed():
    async with RawServer(lambda head, n: ok()) as srv:
        pool = HttpClient(5, 5)
        for _ in range(3):
            resp = await pool.request("POST", srv.url + "?x=1", content=b'{"a": 1}', headers={"Authorization": "Bearer k"})
            assert resp.status_code == 200 and resp.json() == {"ok": True} and resp.headers["content-type"] == "application/json"
        await pool.aclose()
    assert srv.connections == 1
    head = srv.heads[0].split("\r\n")
    port = srv.url.split(":")[2].split("/")[0]
    assert head[0] == "POST /v1/chat?x=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}" in head and "Authorization: Bearer k" in head and "Content-Length: 8" in head


async def test_chunked_and_close_delimited_bodies():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    async with RawServer(lambda head, n: chunked) as srv:
        pool = HttpClient(5, 5)
        assert (await pool.request("POST", srv.url)).content == b"hello world"
        assert (await pool.request("POST", srv.url)).content == b"hello world"
        await pool.aclose()
    assert srv.connections == 1
    until_close = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nthe whole body"
    async with RawServer(lambda head, n: until_close, close_after_each=True) as srv:
        pool = HttpClient(5, 5)
        assert (await pool.request("POST", srv.url)).content == b"the whole body"
        assert (await pool.request("POST", srv.url)).text == "the whole body"
        await pool.aclose()
    assert srv.connections == 2  # HTTP/1.0 without keep-alive: never reused


async def test_a_connection_the_server_closed_while_idle_is_replaced():
    """Servers drop idle keep-alive connections whenever they like; the next request must not fail for it."""
    async with RawServer(lambda head, n: ok(f'{{"conn": {n}}}'.encode()), close_after_each=True) as srv:
        pool = HttpClient(5, 5)
        first = await pool.request("POST", srv.url)
        await asyncio.sleep(0.05)  # the server's close reaches us
        second = await pool.request("POST", srv.url)
        await pool.aclose()
    assert (first.json(), second.json()) == ({"conn": 1}, {"conn": 2})


async def test_a_stale_connection_found_only_when_writing_is_a_transport_error_never_an_answer():
    """The close can arrive after the pool handed the connection out: a transport error, which `with_retries` retries
    (a POST is not retried inside the client, RFC 9112 9.3.1), and the next request opens a fresh connection."""
    answered = []

    def reply(head, n):
        if n == 1 and answered:
            return None  # the second request on the first connection: closed unanswered
        answered.append(n)
        return ok(f'{{"conn": {n}}}'.encode())

    async with RawServer(reply) as srv:
        pool = HttpClient(5, 5)
        assert (await pool.request("POST", srv.url)).json() == {"conn": 1}
        with pytest.raises(httpx.TransportError, match="closed the connection before a complete response"):
            await pool.request("POST", srv.url)
        assert (await pool.request("POST", srv.url)).json() == {"conn": 2}
        await pool.aclose()


async def test_connection_close_header_is_honoured():
    async with RawServer(lambda head, n: ok(extra="Connection: close\r\n"), close_after_each=True) as srv:
        pool = HttpClient(5, 5)
        for _ in range(2):
            assert (await pool.request("POST", srv.url)).status_code == 200
        await pool.aclose()
    assert srv.connections == 2


async def test_timeout_names_the_server_and_the_limit_and_the_connection_is_dropped():
    async with RawServer(lambda head, n: ok(), delay_s=0.5) as srv:
        pool = HttpClient(0.2, 5)
        with pytest.raises(httpx.ReadTimeout, match=r"127\.0\.0\.1:\d+ within 0\.2 s"):
            await pool.request("POST", srv.url)
        srv.delay_s = 0.0
        assert (await pool.request("POST", srv.url)).status_code == 200  # not the late reply of the first request
        await pool.aclose()
    assert srv.connections == 2


async def test_cancelled_request_never_leaves_its_reply_for_the_next():
    replies = iter([ok(b'{"n": 1}'), ok(b'{"n": 2}'), ok(b'{"n": 3}')])
    async with RawServer(lambda head, n: next(replies), delay_s=0.2) as srv:
        pool = HttpClient(5, 5)
        task = asyncio.ensure_future(pool.request("POST", srv.url))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await pool.request("POST", srv.url)).json() == {"n": 2}
        await pool.aclose()
    assert srv.connections == 2


async def test_garbage_and_truncated_replies_are_protocol_errors():
    pool = HttpClient(5, 5)
    async with RawServer(lambda head, n: b"SSH-2.0-OpenSSH_9.2\r\n\r\n") as srv:
        with pytest.raises(httpx.RemoteProtocolError, match="not HTTP/1.1"):
            await pool.request("POST", srv.url)
    truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b"
    async with RawServer(lambda head, n: truncated, close_after_each=True) as srv:
        with pytest.raises(httpx.RemoteProtocolError, match="before a complete response"):
            await pool.request("POST", srv.url)
    async with RawServer(lambda head, n: None) as srv:  # accepts, reads, closes: never an answer
        with pytest.raises(httpx.RemoteProtocolError, match="before a complete response"):
            await pool.request("POST", srv.url)
    await pool.aclose()


async def test_refused_connections_and_bad_urls():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    pool = HttpClient(5, 5)
    with pytest.raises(httpx.ConnectError, match=f"127.0.0.1:{port}"):
        await pool.request("POST", f"http://127.0.0.1:{port}/v1")
    for url in ("ftp://127.0.0.1/x", "http:///nohost", "http://127.0.0.1:notaport/"):
        with pytest.raises(httpx.UnsupportedProtocol, match="cannot request"):
            await pool.request("POST", url)
    await pool.aclose()


def test_one_pool_serves_consecutive_event_loops(caplog):
    """A client made once and used by two `asyncio.run`s against one server: the second loop must not be handed
    the first loop's kept-alive connections (they belong to a closed loop)."""
    import gc

    from webdancer.testing.fake_openai import FakeOpenAIServer

    gc.collect()  # sessions other tests left behind are not this pool's
    caplog.clear()
    pool = HttpClient(5, 5)

    async def twice(url):
        return [(await pool.request("POST", url, content=b"{}")).status_code for _ in range(2)]

    with FakeOpenAIServer(default="hi") as srv:
        url = srv.base_url + "/chat/completions"
        assert asyncio.run(twice(url)) == [200, 200]
        assert asyncio.run(twice(url)) == [200, 200]
    assert len(pool._sessions) == 1  # the finished loop's session was retired
    asyncio.run(pool.aclose())
    assert not [r for r in caplog.records if "Unclosed" in r.getMessage()]


async def test_aio_run_from_code_an_event_loop_is_running_uses_a_thread_of_its_own():
    """Sync library code (`rl prepare` listing an MCP server's tools) called from an async caller."""
    import threading

    from webdancer.aio import run

    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    assert run(where()).startswith("webdancer-run")  # asyncio.run would raise here: a loop is running


async def test_bytes_sent_after_a_reply_are_never_the_next_answer():
    """A server that writes after its response (a second, unasked reply, or garbage) is out of step: its request may
    fail as a protocol error, but the next request must not read those bytes as its answer."""
    for stray in (ok(b'{"stray": true}'), b"SSH-2.0-OpenSSH_9.2\r\n\r\n"):
        async with RawServer(lambda head, n: ok(f'{{"conn": {n}}}'.encode()) + (stray if n == 1 else b"")) as srv:
            pool = HttpClient(5, 5)
            try:
                assert (await pool.request("POST", srv.url)).json() == {"conn": 1}
            except httpx.RemoteProtocolError:
                pass
            await asyncio.sleep(0.05)
            assert (await pool.request("POST", srv.url)).json() == {"conn": 2}
            await pool.aclose()


async def test_https_verifies_the_server_and_keeps_the_connection(tmp_path, monkeypatch):
    """TLS over loopback with a self-signed certificate: refused by the default trust store (naming the failure),
    answered and kept alive once the certificate is trusted."""
    import shutil
    import ssl
    import subprocess

    import webdancer.http as http

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    srv = RawServer(lambda head, n: ok())
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0, ssl=server_ctx)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat"
    try:
        pool = HttpClient(5, 5)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await pool.request("POST", url)
        await pool.aclose()
        trusting = ssl.create_default_context(cafile=str(cert))
        monkeypatch.setattr(http, "shared_ssl_context", lambda: trusting)
        pool = HttpClient(5, 5)
        for _ in range(2):
            resp = await pool.request("POST", url, content=b"{}")
            assert resp.status_code == 200 and resp.json() == {"ok": True}
        await pool.aclose()
    finally:
        server.close()
    assert srv.connections == 1  # the refused handshake never reached the handler; one kept-alive connection for both requests


def test_json_bodies_orjson_refuses_are_read_as_json_reads_them():
    assert RawResponse(200, {}, b'{"a": [1, "\xc3\xa9"]}').json() == {"a": [1, "é"]}
    assert RawResponse(200, {}, b'{"x": NaN, "big": 123456789012345678901234567890}').json()["big"] == 123456789012345678901234567890
    for bad in (b"<html>", b"\xff\xfe", b'{"a": 1} trailing'):
        with pytest.raises(ValueError):
            RawResponse(200, {}, bad).json()


async def test_proxies_come_from_the_environment_except_for_loopback(monkeypatch):
    """A hosted endpoint is reached through HTTP_PROXY (as a cluster behind a proxy needs), NO_PROXY is honoured, and a
    model served on this machine is never sent to the proxy."""
    async with RawServer(lambda head, n: ok(b'{"via": "proxy"}')) as proxy, RawServer(lambda head, n: ok(b'{"via": "direct"}')) as local:
        monkeypatch.setenv("HTTP_PROXY", proxy.url.rsplit("/v1", 1)[0])
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        hosted = HttpClient(5, 5)
        assert (await hosted.request("POST", "http://api.example.invalid/v1/chat", content=b"{}")).json() == {"via": "proxy"}
        assert proxy.heads[0].startswith("POST http://api.example.invalid/v1/chat HTTP/1.1")
        await hosted.aclose()
        served_here = HttpClient(5, 5)
        assert (await served_here.request("POST", local.url, content=b"{}")).json() == {"via": "direct"}
        await served_here.aclose()
        monkeypatch.setenv("NO_PROXY", "api.example.invalid")
        bypassed = HttpClient(5, 5)
        with pytest.raises(httpx.ConnectError, match="api.example.invalid"):
            await bypassed.request("POST", "http://api.example.invalid/v1/chat", content=b"{}")
        await bypassed.aclose()
    assert len(proxy.heads) == 1


def test_loopback_names_every_spelling_of_this_machine_and_nothing_else():
    from webdancer_pipeline.pipeline import _serves

    from webdancer.http import is_loopback

    assert all(is_loopback(h) for h in ("localhost", "LOCALHOST", "127.0.0.1", "127.3.2.1", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "localhost.example.com", ""))
    # A server bound to every address, or to loopback, is what a loopback URL reaches; another host is not.
    assert _serves("http://localhost:30000/v1", "0.0.0.0", 30000) and _serves("http://[::1]:30000/v1", "127.0.0.1", 30000)
    assert not _serves("http://10.0.0.1:30000/v1", "127.0.0.1", 30000) and not _serves("http://localhost:30001/v1", "::", 30000)


def test_a_client_left_open_after_its_event_loop_ends_is_retired_quietly_at_exit():
    """A client used inside `asyncio.run` and never closed (a judge's, say): no "Unclosed client session" at exit."""
    import subprocess
    import sys

    script = """
import asyncio
from webdancer.http import HttpClient
from webdancer.testing.fake_openai import FakeOpenAIServer
with FakeOpenAIServer(default="hi") as srv:
    client = HttpClient(10, 5)
    body = b'{"model": "m", "messages": [{"role": "user", "content": "x"}]}'
    for _ in range(2):  # two loops, two sessions
        print(asyncio.run(client.request("POST", srv.base_url + "/chat/completions", body, {"content-type": "application/json"})).status_code)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["200", "200"], out.stderr
    assert "Unclosed" not in out.stderr, out.stderr
