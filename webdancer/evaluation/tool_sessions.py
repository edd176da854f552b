"""What each sampling session of an eval did with its tools (blocked results, the tool store's counts),
summed for results.json."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from webdancer.jsonl import JsonlAppender, iter_json_lines
from webdancer.leaks import Blocklist


def record_tool_session(toolbox: Any, path: Path) -> None:
    """Append what this sampling session's tools did besides answering: results and visits the blocklist kept from
    the agent, and the tool store's calls, hits and misses per tool (nothing when there is neither)."""
    blocked: Counter = Counter()
    for tool in toolbox.tools.values():
        if isinstance(getattr(tool, "blocklist", None), Blocklist):
            blocked.update(tool.blocklist.counts)
    store = toolbox.store.summary() if toolbox.store is not None else {}
    if blocked or store:
        with JsonlAppender(path, key=lambda r: r["written"]) as sink:
            sink.write({"blocked": {"search_results": blocked["search_results"], "visits": blocked["visits"]}, "tool_store": store,
                        "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")})


def tool_session_totals(path: Path) -> dict[str, Any]:
    """The sums over every session of `record_tool_session`: blocked counts, and the tool store's per tool."""
    blocked = {"search_results": 0, "visits": 0}
    store: dict[str, Counter] = defaultdict(Counter)
    if path.exists():
        for _, obj in iter_json_lines(path):
            for key in blocked:
                blocked[key] += int(obj.get("blocked", {}).get(key, 0))
            for tool, counts in (obj.get("tool_store") or {}).items():
                store[tool].update(counts)
    return {"blocked": blocked, "tool_store": {tool: {k: round(v, 6) for k, v in c.items()} for tool, c in sorted(store.items())}}
