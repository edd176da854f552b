"""The offline web under load: requests/s and p50/p99 latency at 1, 64 and 256 concurrent clients.

The server (`webdancer web serve`'s LocalWebServer on a small built web) runs in its own process;
the clients are asyncio keep-alive connections in this one, fetching one FOLDOC page over and over,
while a slow client sends its request one byte per second. Ratio: requests/s at N clients over
requests/s at 1 client (does throughput hold under load?); target >= 0.8 at 64 and 256, and the
slow client must not stall anyone (p99 stays under 1 s).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import Row, emit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from webdancer_web.build import build_web  # noqa: E402
from webdancer_web.config import SiteConfig  # noqa: E402
from webdancer_web.server import LocalWebServer  # noqa: E402

FOLDOC = Path("/usr/share/dictd")
PAGE = "/foldoc/python.html"
SECONDS = 4.0


def _serve(root: str, port_q: mp.Queue) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = LocalWebServer(Path(root), "127.0.0.1", port)
    port_q.put(port)
    server.serve_forever()


async def _client(port: int, until: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {PAGE} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
    finally:
        writer.close()


async def _load(port: int, clients: int) -> tuple[float, float, float]:
    latencies: list[float] = []
    until = time.perf_counter() + SECONDS
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, until, latencies) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return len(latencies) / elapsed, statistics.median(latencies), p99


def _trickle(port: int, stop: threading.Event) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for byte in f"GET {PAGE} HTTP/1.1\r\nHost: slow\r\n".encode():
            if stop.wait(1.0):
                return
            sock.send(bytes([byte]))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        build_web([SiteConfig("foldoc", "foldoc", str(FOLDOC))], Path(tmp), "http://127.0.0.1:1")
        ctx = mp.get_context("spawn")
        port_q: mp.Queue = ctx.Queue()
        proc = ctx.Process(target=_serve, args=(tmp, port_q), daemon=True)
        proc.start()
        port = port_q.get(timeout=60)
        stop = threading.Event()
        threading.Thread(target=_trickle, args=(port, stop), daemon=True).start()
        try:
            results = {n: asyncio.run(_load(port, n)) for n in (1, 64, 256)}
        finally:
            stop.set()
            proc.terminate()
            proc.join(5)
    base = results[1][0]
    rows = []
    for n, (rps, p50, p99) in results.items():
        rows.append(Row("web_server", f"{n} clients: requests/s", rps, "req/s", rps / base, "vs 1 client",
                        ">= 0.8" if n > 1 else "-", n == 1 or rps / base >= 0.8))
        rows.append(Row("web_server", f"{n} clients: p50 / p99 latency", p99 * 1000, "ms p99", p50 * 1000, "p50 ms",
                        "p99 < 1000 ms with a slow client", p99 < 1.0))
    emit(rows)


if __name__ == "__main__":
    main()
