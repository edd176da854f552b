"""What every episode of one environment process shares, whichever adapter serves it (OpenEnv, verifiers)."""

from __future__ import annotations

import asyncio
import random
from typing import Optional

from webdancer.config import WebdancerConfig
from webdancer.records import QAItem
from webdancer.rewards import RewardSet
from webdancer.tools import ToolBox


class SharedEnvironment:
    """What every episode of a server or an evaluation shares: the config, the QA tasks, one toolbox (opened lazily,
    on the serving event loop), the reward set."""

    def __init__(self, cfg: WebdancerConfig, tasks: list[QAItem]):
        self.cfg, self.tasks = cfg, tasks
        self.rewards = RewardSet.from_config(cfg)  # an unknown reward or tool fails here, at start, by name
        self._unopened: Optional[ToolBox] = ToolBox.for_run(cfg)
        self._toolbox: Optional[ToolBox] = None
        self._lock: Optional[asyncio.Lock] = None
        self._next = 0

    async def toolbox(self) -> ToolBox:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._toolbox is None and self._unopened is not None:
                await self._unopened.__aenter__()  # tool sets (MCP servers) open on the server's event loop
                self._toolbox, self._unopened = self._unopened, None
        return self._toolbox

    def task(self, question: Optional[str], answer: Optional[str], index: Optional[int], seed: Optional[int]) -> QAItem:
        if question is not None:
            return QAItem(question=question, answer=answer or "")
        if not self.tasks:
            raise ValueError("no QA file is served (webdancer env serve --qa FILE): reset with question= (and answer=)")
        if index is not None:
            if not 0 <= index < len(self.tasks):
                raise ValueError(f"index={index} is outside the {len(self.tasks)} served questions (0..{len(self.tasks) - 1})")
            return self.tasks[index]
        if seed is not None:
            return random.Random(seed).choice(self.tasks)
        item, self._next = self.tasks[self._next % len(self.tasks)], self._next + 1
        return item

    async def aclose(self) -> None:
        if self._toolbox is not None:
            await self._toolbox.aclose()
        await self.rewards.aclose()
