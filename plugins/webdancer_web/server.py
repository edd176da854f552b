"""Serves the built local web over real HTTP on loopback: one folder per site under /<site>/."""

from __future__ import annotations

import html
import json
import os
import posixpath
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from webdancer.errors import WebdancerError
from webdancer_web.build import load_manifest


class _Handler(SimpleHTTPRequestHandler):
    """The stdlib static handler (content types, 301 for folders, index.html, 404) with many roots."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # Each connection has its own thread, so a slow client delays only itself; one that sends
    # nothing for this long (a stalled or slow-loris connection) is closed and frees its thread.
    timeout = 30
    roots: dict[str, str] = {}
    redirects: dict[str, dict[str, str]] = {}

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        if os.environ.get("WEBDANCER_WEB_LOG"):
            super().log_message(format, *args)

    def _site_and_rest(self) -> tuple[str, str]:
        path = unquote(urlsplit(self.path).path)
        parts = path.lstrip("/").split("/", 1)
        return parts[0], (parts[1] if len(parts) > 1 else "")

    def send_head(self):  # noqa: ANN201 - stdlib signature
        site, rest = self._site_and_rest()
        if self.path in ("/", ""):
            return self._send_text(200, self._home(), "text/html; charset=utf-8")
        if site == "robots.txt":
            return self._send_text(200, "User-agent: *\nAllow: /\n", "text/plain; charset=utf-8")
        if site not in self.roots:
            self.send_error(404, "No such site")
            return None
        if "/" not in self.path.lstrip("/"):  # /python -> /python/
            return self._redirect(f"/{site}/")
        target = self.redirects.get(site, {}).get(rest)
        if target:
            return self._redirect(f"/{site}/{target}")
        return super().send_head()

    def translate_path(self, path: str) -> str:
        site, rest = self._site_and_rest()
        root = self.roots.get(site, "/nonexistent")
        words = [w for w in posixpath.normpath(rest).split("/") if w and w not in (".", "..")]
        full = os.path.join(root, *words)
        if rest.endswith("/") or not rest:
            full += "/"
        return full

    def list_directory(self, path):  # noqa: ANN001, ANN201 - no directory listings
        self.send_error(404, "No index page here")
        return None

    def _redirect(self, location: str):
        self.send_response(301)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return None

    def _send_text(self, status: int, text: str, ctype: str):
        import io

        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return io.BytesIO(data)

    def _home(self) -> str:
        items = "".join(f'<li><a href="/{html.escape(s)}/">{html.escape(s)}</a></li>' for s in sorted(self.roots))
        return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>webdancer local web</title></head><body><h1>Local web</h1><ul>{items}</ul></body></html>"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen backlog: 256 clients connecting at once are all accepted


class LocalWebServer:
    """The local web for one built root; `with LocalWebServer(root, port) as srv:` serves in a thread."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 8765):
        manifest = load_manifest(root)
        roots, redirects = {}, {}
        for site in manifest["sites"]:
            folder = Path(site["served_from"])
            if not folder.is_dir():
                raise WebdancerError(f"site '{site['name']}' folder {folder} is missing: run `webdancer web build` again")
            roots[site["name"]] = str(folder)
            redirect_file = folder / "_redirects.json"
            if redirect_file.is_file():
                redirects[site["name"]] = json.loads(redirect_file.read_text(encoding="utf-8"))
        handler = type("Handler", (_Handler,), {"roots": roots, "redirects": redirects})
        try:
            self.httpd = _Server((host, port), partial(handler))
        except OSError as exc:
            raise WebdancerError(f"cannot serve the local web on {host}:{port}: {exc.strerror} (is another server on that port? set web.port)") from None
        self.manifest = manifest
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def __enter__(self) -> "LocalWebServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
