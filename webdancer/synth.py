"""The data-synthesizer interface: writes QA items for `webdancer synth NAME`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, ClassVar

from webdancer import aio
from webdancer.records import QAItem
from webdancer.tools import NoOptions


class Synthesizer:
    """Subclass, set `name` (and `Config`), implement `generate` yielding QA items.

    The runner writes each item to append-only JSONL and skips ids already written, so
    `generate` should be deterministic for a given config (seeded) to make resume exact.
    """

    name: ClassVar[str]
    Config: ClassVar[type] = NoOptions

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    def generate(self) -> AsyncIterator[QAItem]:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close clients."""


async def run_synthesizer(synth: Synthesizer, out: Path, progress: Any = None) -> dict[str, int]:
    """Write the synthesizer's items to `out` (append-only); ids already there are skipped (resume)."""
    from webdancer.jsonl import JsonlAppender

    written = skipped = 0
    with JsonlAppender(out) as sink:
        async for item in synth.generate():
            if item.id in sink:
                skipped += 1
                continue
            sink.write(item)
            written += 1
            if progress is not None:
                progress(written)
    await synth.aclose()
    return {"written": written, "already_there": skipped}


def synthesize(cfg: Any, name: str, out: Path, seed_file: str | None = None) -> dict[str, Any]:
    """Build synthesizer `name` from `synth.<name>` (plus defaults the run folder implies) and run it."""
    import dataclasses

    from webdancer.plugins import get_plugins

    cls = get_plugins().get("synthesizers", name)
    options = dict(cfg.synth.get(name, {}))
    if seed_file:
        options["seed_file"] = seed_file
    names = {f.name for f in dataclasses.fields(cls.Config)}
    if "crawl_store" in names and not options.get("crawl_store"):
        options["crawl_store"] = str(cfg.run.dir / f"crawl_{name}.jsonl")
    if "search" in names and not options.get("search"):  # look things up where the agent's `search` does
        options["search"] = dict(cfg.tools.get("search") or {})
    synth = get_plugins().build("synthesizers", name, options, f"synth.{name}")
    counts: dict[str, Any] = aio.run(run_synthesizer(synth, out))
    counts["dropped"] = dict(getattr(getattr(synth, "gate", None), "dropped", {}) or {})
    return counts


def qa_stats(items: list[QAItem]) -> dict[str, dict[str, int]]:
    """Counts by tag, kind, hops and difficulty (E2HQA round)."""
    from collections import Counter

    out: dict[str, Counter] = {"tag": Counter(), "kind": Counter(), "hops": Counter(), "difficulty": Counter(), "generator": Counter()}
    for item in items:
        out["tag"][item.tag or "-"] += 1
        out["kind"][str(item.provenance.get("kind", "-"))] += 1
        out["hops"][str(item.hops)] += 1
        out["difficulty"][str(item.provenance.get("difficulty", 0))] += 1
        out["generator"][str(item.provenance.get("generator", "-"))] += 1
    return {k: dict(sorted(v.items())) for k, v in out.items()}
