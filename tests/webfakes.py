"""Loopback fakes of web services, speaking their real wire formats: Serper, Jina Reader, a scriptable site."""

import json
import threading
import time
from dataclasses import dataclass, field

from webdancer.testing.servers import BackgroundServer, QuietHandler


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0
    chunked: bool = False


class _SiteHandler(QuietHandler):
    def do_GET(self):  # noqa: N802
        owner = self.server.owner
        with owner.lock:
            owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
            owner.hosts.append(self.headers.get("Host"))
        route = owner.routes.get(self.path)
        if route is None:
            self.send_json(404, b"not found")
            return
        if route.delay_s:
            time.sleep(route.delay_s)
        self.send_response(route.status)
        self.send_header("Content-Type", route.content_type)
        for k, v in route.headers.items():
            self.send_header(k, v)
        if route.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(route.body), 65536):
                piece = route.body[i : i + 65536]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        self.wfile.write(route.body)


class ScriptedSite(BackgroundServer):
    """A site whose paths answer what the test says, counting hits per path."""

    def __init__(self, routes=None, host="127.0.0.1", port=0):
        super().__init__(_SiteHandler, port=port, host=host)
        self.routes = routes or {}
        self.hits = {}
        self.hosts = []  # the Host header of each request
        self.lock = threading.Lock()

    @property
    def host_port(self):
        return f"{self.host}:{self.port}"


class _SerperHandler(QuietHandler):
    def do_POST(self):  # noqa: N802
        owner = self.server.owner
        body = json.loads(self.read_body() or b"{}")
        owner.requests.append({"body": body, "key": self.headers.get("X-API-KEY")})
        status = owner.statuses.pop(0) if owner.statuses else 200
        if self.headers.get("X-API-KEY") != owner.key:
            status = 403
        if status != 200:
            self.send_json(status, json.dumps({"message": "error", "statusCode": status}).encode())
            return
        organic = [
            {"title": f"Result {i} for {body['q']}", "link": f"https://example.org/{i}", "snippet": f"Snippet {i}.", "position": i}
            for i in range(1, min(body.get("num", 10), 3) + 1)
        ]
        organic[0]["date"] = "May 19, 2025"
        payload = {"searchParameters": {"q": body["q"], "type": "search", "engine": "google"}, "organic": organic}
        self.send_json(200, json.dumps(payload).encode())


class FakeSerper(BackgroundServer):
    """Serper's /search: POST JSON {q, num}, X-API-KEY header, answers {searchParameters, organic: [...]}."""

    def __init__(self, key="serper-test-key", statuses=None):
        super().__init__(_SerperHandler)
        self.key = key
        self.statuses = list(statuses or [])
        self.requests = []


class _JinaHandler(QuietHandler):
    def do_GET(self):  # noqa: N802
        owner = self.server.owner
        owner.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "timeout": self.headers.get("X-Timeout")})
        if owner.delay_s:
            time.sleep(owner.delay_s)
        if owner.statuses:
            answer = owner.statuses.pop(0)
            if isinstance(answer, int):
                self.send_json(answer, b'{"code": 429, "message": "rate limited"}')
            else:  # (status, content type, body) as sent
                status, ctype, body = answer
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            return
        if self.headers.get("Authorization") != f"Bearer {owner.key}":
            self.send_json(401, b'{"code": 401, "message": "Invalid API key"}')
            return
        target = self.path[1:]
        text = f"Title: Page at {target}\n\nURL Source: {target}\n\nMarkdown Content:\nThe Derby was won by Santa Claus in 1964.\n\nOther facts follow."
        payload = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class FakeJina(BackgroundServer):
    """Jina Reader: GET /<target url> with a Bearer key, answers the page as Title/URL Source/Markdown text."""

    def __init__(self, key="jina-test-key", statuses=None):
        super().__init__(_JinaHandler)
        self.key = key
        self.statuses = list(statuses or [])  # answered first, one per request: a status (429s) or (status, type, body)
        self.delay_s = 0.0  # before each answer (a Jina that does not answer in time)
        self.requests = []
