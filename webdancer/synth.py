"""The data-synthesizer interface: writes QA items for `webdancer synth NAME`."""

from __future__ import annotations

from typing import Any, AsyncIterator, ClassVar

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
