"""`webdancer sample`: N rollouts per question through the agent, appended as they finish, resumable."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from webdancer.agent import Agent, run_many
from webdancer.jsonl import JsonlAppender
from webdancer.records import QAItem, Trajectory
from webdancer.scoring import matches


@dataclass
class SampleStats:
    planned: int = 0
    already_there: int = 0
    done: int = 0
    correct: int = 0
    terminations: Counter = field(default_factory=Counter)
    completion_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def failed(self) -> int:
        return sum(v for k, v in self.terminations.items() if k in ("model_error", "policy_error"))

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / max(1e-9, time.perf_counter() - self.started)


def quick_correct(traj: Trajectory) -> bool:
    """For live counts only: the filter's no-judge rule (the filter decides for real, with a judge if set)."""
    if not traj.answer or not traj.reference_answer:
        return False
    return matches(traj.answer, traj.reference_answer)


async def sample(
    agent: Agent,
    items: list[QAItem],
    n: int,
    out: Path,
    concurrency: int,
    on_update: Optional[Callable[[SampleStats], None]] = None,
) -> SampleStats:
    """Run every (question, sample index) not yet in `out`; each trajectory is written when it finishes."""
    stats = SampleStats()
    with JsonlAppender(out) as sink:
        todo = []
        for item in items:
            for s in range(n):
                if f"{item.id}:{s}" in sink:
                    stats.already_there += 1
                else:
                    todo.append((item, s))
        stats.planned = len(todo)

        def done(traj: Trajectory) -> None:
            sink.write(traj)
            stats.done += 1
            stats.correct += quick_correct(traj)
            stats.terminations[traj.termination] += 1
            stats.completion_tokens += traj.usage.completion_tokens
            if on_update is not None:
                on_update(stats)

        await run_many(agent, todo, concurrency, on_done=done)
    return stats
