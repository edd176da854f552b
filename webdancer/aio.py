"""One way to run a coroutine to completion: on uvloop where it is installed.

uvloop (a dependency of uvicorn[standard], so present wherever the model server is) takes ~10 %
less CPU per model call off the agent loop at 256 concurrent rollouts (benchmarks/agent_throughput.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Awaitable, Coroutine, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(coro)` on a uvloop event loop when uvloop imports, else on asyncio's own. Called from code that
    an event loop is running (sync library code inside an async caller), it runs `coro` on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="webdancer-run") as pool:
        return pool.submit(_run, coro).result()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    if not hasattr(asyncio, "Runner"):  # Python 3.10
        uvloop.install()
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def within(seconds: float, aw: Awaitable[T]) -> T:
    """`await aw`, raising asyncio.TimeoutError after `seconds`. On 3.11+ a timer on this task
    (`asyncio.timeout`), not a second task per call as `wait_for` makes: the agent loop awaits one per
    model and tool call."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await aw
    return await asyncio.wait_for(aw, seconds)
