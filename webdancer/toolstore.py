"""Record and replay tool calls: one content-addressed store shared by sampling, eval and RL.

Every call is keyed by the tool, a fingerprint of the tool's options (those that change what it
returns) and its arguments. Modes (`tool_store.mode`): `live` calls and records, `cached` serves
what was recorded and calls (and records) the rest, `replay` never calls: a call that was not
recorded gets an error observation naming it. A store is a folder (`calls.jsonl`, append-only, and
`tools.json`, what options each tool was recorded with) that can be copied to another machine.
Failed calls (timeouts, outages) are never recorded: an infrastructure failure is not an observation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol

from webdancer.errors import ConfigError
from webdancer.jsonl import JsonlAppender, atomic_write_json

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from webdancer.config import ToolStoreConfig

BATCH_CHARS = 64_000  # observations' characters held before a write

# Options that change how a call is made, not what it returns (a tool adds its own in `volatile_options`).
VOLATILE_SUFFIXES = ("timeout_s", "backoff_s", "max_retries", "concurrency", "cache_dir", "api_key_env")


class Fingerprinted(Protocol):
    """What the store reads of a tool (webdancer.tools.Tool is one): its name and its options."""

    name: str
    config: Any


def tool_fingerprint(tool: Fingerprinted) -> tuple[str, dict[str, Any]]:
    """(hash, options) of the tool's options that decide its observations."""
    config = dataclasses.asdict(tool.config) if dataclasses.is_dataclass(tool.config) else {}
    volatile = set(getattr(tool, "volatile_options", ()))
    options = {k: v for k, v in sorted(config.items()) if k not in volatile and not k.endswith(VOLATILE_SUFFIXES)}
    text = json.dumps([tool.name, options], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16], options


# The key's text; one encoder, not one per call (json.dumps builds one whenever it is given options).
_KEY_TEXT = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str).encode


def call_key(tool: str, fingerprint: str, arguments: dict[str, Any]) -> str:
    return hashlib.sha256(_KEY_TEXT([tool, fingerprint, arguments]).encode()).hexdigest()[:32]


class ToolStore:
    """The store folder: recorded observations by key, and counts of this process's calls per tool."""

    def __init__(self, config: "ToolStoreConfig"):
        self.mode = config.mode
        self.dir = Path(config.dir)
        self.prices = dict(config.prices or {})
        self.calls_file = self.dir / "calls.jsonl"
        self.manifest_file = self.dir / "tools.json"
        if self.mode == "replay" and not self.calls_file.is_file():
            raise ConfigError(f"tool_store.mode=replay: no recorded calls at {self.calls_file}; record them first "
                              "(tool_store.mode=live or cached) or point tool_store.dir at a copied store")
        # Live mode only writes: it neither reads the recordings nor keeps what it records in memory.
        self.recorded: dict[str, tuple[str, bool]] = {}
        if self.mode != "live" and self.calls_file.is_file():
            self._load()
        self.manifest: dict[str, Any] = json.loads(self.manifest_file.read_text()) if self.manifest_file.is_file() else {}
        self.stats: dict[str, Counter] = defaultdict(Counter)
        self._sink: Optional[JsonlAppender] = None
        # Records are written in batches of whole lines (one write each): a crash loses at most the last batch,
        # calls that a rerun makes again (benchmarks/tool_store.py measures what recording costs a call).
        self._pending: list[tuple[Optional[str], str, str, dict[str, Any], str, bool]] = []
        self._pending_chars = 0

    def _load(self) -> None:
        """Read the recordings; a line that is not a complete record (a crash mid-write, a bad copy) is skipped, with a warning."""
        skipped = []
        with self.calls_file.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    obj = json.loads(raw)
                    self.recorded[obj["key"]] = (str(obj["content"]), bool(obj.get("error")))
                except (ValueError, KeyError, TypeError):
                    if raw.strip():
                        skipped.append(lineno)
        if skipped:
            log.warning("%s: skipped %d line(s) that are not complete records (lines %s); those calls count as not recorded",
                        self.calls_file, len(skipped), ", ".join(map(str, skipped[:5])))

    def check_tools(self, tools: dict[str, Fingerprinted]) -> dict[str, str]:
        """Fingerprint each tool; in replay mode, refuse a tool the store has no recordings for with these options."""
        prints = {}
        for name, tool in tools.items():
            fingerprint, options = tool_fingerprint(tool)
            prints[name] = fingerprint
            recorded = self.manifest.get(name, {}).get(fingerprint)
            if self.mode == "replay" and recorded is None:
                known = [opts for opts in self.manifest.get(name, {}).values()]
                raise ConfigError(
                    f"tool_store.mode=replay: {self.dir} has no recordings of tool '{name}' with options {options}"
                    + (f"; it was recorded with {known}" if known else "; it has none of that tool")
                    + ". Use the recording's tool options, or tool_store.mode=cached to call what is missing")
            if self.mode != "replay" and recorded is None:
                self.manifest.setdefault(name, {})[fingerprint] = options
                self.dir.mkdir(parents=True, exist_ok=True)
                atomic_write_json(self.manifest_file, self.manifest)
        return prints

    def get(self, key: str) -> Optional[tuple[str, bool]]:
        return self.recorded.get(key)  # always empty in live mode

    def put(self, key: Optional[str], tool: str, fingerprint: str, arguments: dict[str, Any], content: str, error: bool) -> None:
        """Record a call; `key` None (live mode: nothing is looked up) is computed when the batch is written."""
        self._pending.append((key, tool, fingerprint, arguments, content, error))
        self._pending_chars += len(content)
        if self.mode != "live":
            self.recorded[key] = (content, error)
        if self._pending_chars >= BATCH_CHARS:
            self.flush()

    def flush(self) -> None:
        """Write the pending records (the appender cuts a torn last line first, once per process)."""
        if not self._pending:
            return
        if self._sink is None:
            self._sink = JsonlAppender(self.calls_file, key=None)  # append only: the store read its own lines, bad ones skipped
        self._sink.write_many([{"key": key or call_key(tool, fingerprint, arguments), "tool": tool, "arguments": arguments,
                                "content": content, "error": error}
                               for key, tool, fingerprint, arguments, content, error in self._pending])
        self._pending, self._pending_chars = [], 0

    def summary(self) -> dict[str, dict[str, float]]:
        """Per tool: calls, hits, misses (live calls), replay misses and the estimated cost of the live calls."""
        return {tool: {"calls": c["calls"], "hits": c["hits"], "misses": c["misses"], "replay_misses": c["replay_misses"],
                       "cost": round(c["misses"] * float(self.prices.get(tool, 0.0)), 6)}
                for tool, c in sorted(self.stats.items())}

    def close(self) -> None:
        self.flush()
        if self._sink is not None:
            self._sink.close()
            self._sink = None
