"""A fake OpenAI-compatible chat server on loopback: scripted replies, failures, fixed latency.

It speaks the real `/v1/chat/completions` wire format (request JSON, `choices[0].message`,
`usage`, `finish_reason`, HTTP errors with `Retry-After`) so the real client is what is tested.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from webdancer.testing.servers import BackgroundServer, QuietHandler

# A reply is the assistant text, or (status, body) for an HTTP failure, or a function of the request.
Reply = Union[str, tuple[int, str], Callable[[dict], str]]


@dataclass
class FakeOpenAIState:
    replies: deque = field(default_factory=deque)
    default: Optional[Reply] = None
    latency_s: float = 0.0
    requests: list[dict] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reasoning: str = ""
    keep_requests: bool = True
    async_latency: bool = False
    # Each reply waits latency_s x (1 + jitter x u), u spread evenly over [-1, 1] in shuffled blocks
    # of 64 (seeded): concurrent rollouts drift apart as they do against a real server instead of
    # arriving in lockstep bursts, and every block of 64 replies averages exactly latency_s, so a
    # benchmark's limit (concurrency / latency) holds even for a short run.
    latency_jitter: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    _spread: list = field(default_factory=list)

    def delay_s(self) -> float:
        if not self.latency_jitter:
            return self.latency_s
        if not self._spread:
            self._spread = [(2 * i + 1) / 64 - 1 for i in range(64)]
            self.rng.shuffle(self._spread)
        return self.latency_s * (1.0 + self.latency_jitter * self._spread.pop())


class _Handler(QuietHandler):
    state: FakeOpenAIState

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self.send_json(200, json.dumps({"object": "list", "data": [{"id": "fake-model", "object": "model"}]}).encode())
        elif self.path in ("/health", "/v1/health"):
            self.send_json(200, b"{}")
        else:
            self.send_json(404, b'{"error": {"message": "not found"}}')

    def do_POST(self) -> None:  # noqa: N802
        state = self.server.owner.state  # type: ignore[attr-defined]
        status, payload, headers = respond(state, self.path, self.read_body(), dict(self.headers))
        self.send_json(status, payload, headers)


def respond(state: FakeOpenAIState, path: str, body: bytes, headers: dict) -> tuple[int, bytes, Optional[dict]]:
    """The reply to one POST, shared by the threaded server (tests) and the asyncio one (benchmarks)."""
    if not path.endswith("/chat/completions"):
        return 404, b'{"error": {"message": "not found"}}', None
    try:
        request = json.loads(body)
    except json.JSONDecodeError:
        return 400, b'{"error": {"message": "invalid JSON body"}}', None
    with state.lock:
        if state.keep_requests:
            state.requests.append(request)
            state.headers.append(headers)
        reply = state.replies.popleft() if state.replies else state.default
    if state.latency_s and not state.async_latency:
        time.sleep(state.delay_s())
    if reply is None:
        return 500, b'{"error": {"message": "fake server has no scripted reply left"}}', None
    if callable(reply):
        reply = reply(request)
    if isinstance(reply, tuple):
        status, text = reply
        extra = {"Retry-After": "0"} if status == 429 else None
        return status, json.dumps({"error": {"message": text}}).encode(), extra
    text = reply
    for stop in request.get("stop") or []:
        idx = text.find(stop)
        if idx >= 0:
            text = text[:idx]
    message = {"role": "assistant", "content": text}
    if state.reasoning:
        message["reasoning_content"] = state.reasoning
    prompt_chars = sum(len(m.get("content") or "") for m in request.get("messages", []))
    head = {"id": "chatcmpl-fake", "created": int(time.time()), "model": request.get("model", "fake-model")}
    usage = {"prompt_tokens": prompt_chars // 4 + 1, "completion_tokens": len(text) // 4 + 1,
             "total_tokens": prompt_chars // 4 + len(text) // 4 + 2}
    if request.get("stream"):
        return 200, stream_events(head, message, usage, request.get("stream_options")), {"Content-Type": "text/event-stream"}
    payload = {**head, "object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage}
    return 200, json.dumps(payload).encode(), None


def stream_events(head: dict, message: dict, usage: dict, options: Optional[dict]) -> bytes:
    """A reply as `stream: true` gets it: server-sent chunks (the message as one delta), the finish reason, the
    usage when `stream_options.include_usage` asks, then [DONE]."""
    chunk = {**head, "object": "chat.completion.chunk"}
    events = [{**chunk, "choices": [{"index": 0, "delta": message, "finish_reason": None}]},
              {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    if (options or {}).get("include_usage"):
        events.append({**chunk, "choices": [], "usage": usage})
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode() + b"data: [DONE]\n\n"


async def serve_asyncio(state: FakeOpenAIState, port: int = 0, on_ready=None) -> None:
    """The same fake on uvicorn, for load benchmarks: one thread, one event loop, no per-connection threads."""
    import asyncio
    import socket

    import uvicorn

    state.async_latency = True

    async def app(scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if state.latency_s:
            await asyncio.sleep(state.delay_s())
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        status, payload, extra = respond(state, scope["path"], body, headers)
        extra = {"Content-Type": "application/json", **(extra or {})}
        out = [(k.lower().encode(), str(v).encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": payload})

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart on the same port while old connections linger
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    if on_ready is not None:
        on_ready(sock.getsockname()[1])  # connections wait in the backlog until uvicorn serves
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None, log_level="warning", access_log=False, backlog=1024))
    await server.serve(sockets=[sock])


class FakeOpenAIServer(BackgroundServer):
    """Usage: `with FakeOpenAIServer(["reply 1", (429, "slow down"), "reply 2"]) as srv: srv.base_url`."""

    def __init__(self, replies: Optional[list[Reply]] = None, default: Optional[Reply] = None, latency_s: float = 0.0, port: int = 0):
        super().__init__(_Handler, port)
        self.state = FakeOpenAIState(replies=deque(replies or []), default=default, latency_s=latency_s)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"
