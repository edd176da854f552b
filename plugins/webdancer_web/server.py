"""Serves the built local web over real HTTP on loopback: each site (a folder, or a generated site's pack) under /<site>/."""

from __future__ import annotations

import html
import json
import mimetypes
import os
import posixpath
import socket
import threading
import time
from email.utils import formatdate
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit

import uvicorn

from webdancer.errors import WebdancerError
from webdancer_web.build import load_manifest
from webdancer_web.pack import Pack

_LOG = bool(os.environ.get("WEBDANCER_WEB_LOG"))


IDLE_TIMEOUT_S = 30.0  # a kept-alive connection with no new request for this long is closed
mimetypes.add_type("text/css", ".css")
mimetypes.add_type("application/javascript", ".js")


Response = tuple[int, list[tuple[str, str]], bytes]


def text_response(status: int, text: str, ctype: str) -> Response:
    body = text.encode("utf-8")
    return status, [("Content-Type", ctype), ("Content-Length", str(len(body)))], body


def redirect_response(location: str) -> Response:
    return 301, [("Location", location), ("Content-Length", "0")], b""


def file_response(name: str, body: bytes, modified: float) -> Response:
    """200 with a served file's body, its type guessed from `name`, and when it was written."""
    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return 200, [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Last-Modified", formatdate(modified, usegmt=True))], body


def error_response(status: int, message: str) -> Response:
    """The error page http.server sends, so readers see what the standard library's server gave."""
    page = (f"<!DOCTYPE HTML>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Error response</title></head>"
            f"<body><h1>Error response</h1><p>Error code: {status}</p><p>Message: {html.escape(message)}.</p></body></html>\n")
    return text_response(status, page, "text/html;charset=utf-8")


class _Site:
    """What answers a request: the sites' folders and redirects (no I/O beyond reading the served files)."""

    def __init__(self, roots: dict[str, str], redirects: dict[str, dict[str, str]], packs: Optional[dict[str, Pack]] = None):
        self.roots, self.redirects, self.packs = roots, redirects, packs or {}

    def respond(self, target: str) -> Response:
        """(status, headers, body) for GET/HEAD `target`: the same answers as the stdlib static handler gave."""
        path = unquote(urlsplit(target).path)
        if path in ("/", ""):
            return text_response(200, self._home(), "text/html; charset=utf-8")
        parts = path.lstrip("/").split("/", 1)
        site, rest = parts[0], (parts[1] if len(parts) > 1 else "")
        if site == "robots.txt":
            return text_response(200, "User-agent: *\nAllow: /\n", "text/plain; charset=utf-8")
        if site not in self.roots and site not in self.packs:
            return error_response(404, "No such site")
        if len(parts) == 1:  # /python -> /python/
            return redirect_response(f"/{site}/")
        target_page = self.redirects.get(site, {}).get(rest)
        if target_page:
            return redirect_response(f"/{site}/{target_page}")
        words = [w for w in posixpath.normpath(rest).split("/") if w and w not in (".", "..")]
        if site in self.packs:
            return self._packed(self.packs[site], "/".join(words) or "index.html")
        full = os.path.join(self.roots[site], *words)
        if os.path.isdir(full):
            if rest and not rest.endswith("/"):
                return redirect_response(f"/{site}/{rest}/")
            full = os.path.join(full, "index.html")
            if not os.path.isfile(full):
                return error_response(404, "No index page here")
        try:
            with open(full, "rb") as fh:
                body = fh.read()
                modified = os.fstat(fh.fileno()).st_mtime
        except OSError:
            return error_response(404, "File not found")
        return file_response(full, body, modified)

    @staticmethod
    def _packed(pack: Pack, path: str) -> Response:
        body = pack.page(path)
        return error_response(404, "File not found") if body is None else file_response(path, body, pack.modified)

    def _home(self) -> str:
        items = "".join(f'<li><a href="/{html.escape(s)}/">{html.escape(s)}</a></li>' for s in sorted({*self.roots, *self.packs}))
        return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>webdancer local web</title></head><body><h1>Local web</h1><ul>{items}</ul></body></html>"


class _App:
    """The ASGI application uvicorn serves: GET and HEAD answered by `_Site`, 501 for other methods."""

    def __init__(self, site: _Site):
        self.site = site

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":  # lifespan is off; nothing else is spoken here
            return
        method = scope["method"]
        if method in ("GET", "HEAD"):
            target = scope["raw_path"].decode("latin-1") + (f"?{scope['query_string'].decode('latin-1')}" if scope["query_string"] else "")
            status, headers, body = self.site.respond(target)
        else:
            status, headers, body = error_response(501, f"Unsupported method ({method!r})")
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]})
        await send({"type": "http.response.body", "body": body})  # uvicorn leaves it out for HEAD


class LocalWebServer:
    """The local web for one built root; `with LocalWebServer(root, port) as srv:` serves in a thread.

    uvicorn (httptools, uvloop where installed) on a socket bound here, so a port in use is named before
    anything starts: one protocol per connection, so throughput holds at hundreds of concurrent clients
    and a client that trickles its request byte by byte delays only itself (benchmarks/web_server.py).
    uvicorn closes idle kept-alive connections but has no deadline for a request head (its issue #157):
    a client that never finishes one keeps its socket, which on a loopback web costs one descriptor."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 8765):
        manifest = load_manifest(root)
        roots, redirects, packs = {}, {}, {}
        for site in manifest["sites"]:
            served = Path(site["served_from"])
            if served.suffix == ".json" and served.is_file():  # a generated site, packed
                packs[site["name"]] = pack = Pack(served)
                redirects[site["name"]] = pack.redirects
                continue
            if not served.is_dir():
                raise WebdancerError(f"site '{site['name']}' at {served} is missing: run `webdancer web build` again")
            roots[site["name"]] = str(served)
            redirect_file = served / "_redirects.json"  # generated sites of earlier builds were folders
            if redirect_file.is_file():
                redirects[site["name"]] = json.loads(redirect_file.read_text(encoding="utf-8"))
        self.site = _Site(roots, redirects, packs)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
            self.sock.listen(1024)  # 256 clients connecting at once are all accepted
        except OSError as exc:
            self.sock.close()
            for pack in packs.values():
                pack.close()
            raise WebdancerError(f"cannot serve the local web on {host}:{port}: {exc.strerror} (is another server on that port? set web.port)") from None
        self.manifest = manifest
        self.server_address = self.sock.getsockname()
        self._server = uvicorn.Server(uvicorn.Config(
            _App(self.site), lifespan="off", log_config=None, log_level="info" if _LOG else "warning", access_log=_LOG,
            timeout_keep_alive=IDLE_TIMEOUT_S, timeout_graceful_shutdown=1, backlog=1024))
        self.thread = threading.Thread(target=self.serve_forever, daemon=True, name="webdancer-web")

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        """Serve until `close()` (from another thread) or Ctrl-C."""
        self._server.run(sockets=[self.sock])

    def close(self) -> None:
        self._server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(5)
        self.sock.close()
        for pack in self.site.packs.values():
            pack.close()
        self.site.packs.clear()

    def __enter__(self) -> "LocalWebServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        if not self._server.started:
            self.close()
            raise WebdancerError(f"the local web on {self.url} did not start within 10 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
