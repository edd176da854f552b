"""The fake OpenAI model in its own process, to SIGKILL and restart (fault-injection tests, the soak benchmark).

`python -m webdancer.testing.model_process PORT TOOL LATENCY_S`: each rollout calls TOOL once, then
answers the last word of its question (deterministic, as greedy decoding is).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import deque

from webdancer.records import ToolCall
from webdancer.wire import render_assistant


def one_call_then_answer(tool: str):
    def reply(request: dict) -> str:
        messages = request["messages"]
        if not any(m["role"] == "assistant" for m in messages):
            return render_assistant("look it up", tool_call=ToolCall(tool, {"query": ["facts"]}))
        return render_assistant("found", answer=messages[1]["content"].split()[-1].rstrip("?"))

    return reply


class ModelProcess:
    """`start()` it on `port`, `kill()` it (SIGKILL: connections in flight die with it), `start()` it again."""

    def __init__(self, port: int, tool: str = "search", latency_s: float = 0.05):
        self.port, self.tool, self.latency_s = port, tool, latency_s
        self.proc: subprocess.Popen | None = None
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "webdancer.testing.model_process", str(self.port), self.tool, str(self.latency_s)]
        self.proc = subprocess.Popen(cmd, env=self.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the fake model process exited with code {self.proc.returncode} before listening on port {self.port}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"the fake model process did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def main(argv: list[str]) -> None:
    import asyncio

    from webdancer.testing.fake_openai import FakeOpenAIState, serve_asyncio

    port, tool, latency = int(argv[0]), argv[1], float(argv[2])
    state = FakeOpenAIState(replies=deque(), default=one_call_then_answer(tool), latency_s=latency, keep_requests=False)
    asyncio.run(serve_asyncio(state, port=port))


if __name__ == "__main__":
    main(sys.argv[1:])
