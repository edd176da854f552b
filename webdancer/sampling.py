"""`webdancer sample`: N rollouts per question through the agent, appended as they finish, resumable.

A rollout that an outage ended (the model endpoint or a tool backend down after its retries) is
not a result: it goes to `<out>.outages.jsonl` beside the results, so no filter, score or RL batch
ever reads it, and a rerun runs it again (unless `keep_failed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from webdancer.agent import Agent, run_many
from webdancer.errors import OutageError
from webdancer.jsonl import JsonlAppender
from webdancer.records import QAItem, Trajectory
from webdancer.runs import outages_path
from webdancer.scoring import matches


@dataclass
class SampleStats:
    planned: int = 0
    already_there: int = 0
    done: int = 0
    correct: int = 0
    terminations: Counter = field(default_factory=Counter)
    completion_tokens: int = 0
    outage_reasons: Counter = field(default_factory=Counter)  # why rollouts of this run ended in an outage
    started: float = field(default_factory=time.perf_counter)
    tool_store: dict[str, Any] = field(default_factory=dict)  # per tool: calls, hits, misses, cost (tool_store.mode != off)

    @property
    def outages(self) -> int:
        """Rollouts an outage ended in this run (kept apart, retried by a rerun)."""
        return sum(self.outage_reasons.values())

    @property
    def failed(self) -> int:
        return sum(v for k, v in self.terminations.items() if k in ("model_error", "policy_error"))

    def tracked(self) -> dict[str, Any]:
        """The numbers the experiment tracker gets."""
        return {"done": self.done, "already_there": self.already_there, "correct": self.correct, "failed": self.failed,
                "outages": self.outages, "tokens_per_s": self.tokens_per_s, "terminations": dict(self.terminations),
                "tool_store": self.tool_store}

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / max(1e-9, time.perf_counter() - self.started)


def check_no_outages(stats: SampleStats, out: Path, rerun: str) -> None:
    """Raise one clear OutageError when outages ended rollouts: the run is incomplete, not finished."""
    if not stats.outages:
        return
    reason, _ = stats.outage_reasons.most_common(1)[0]
    raise OutageError(
        f"{stats.outages} rollout(s) ended because an endpoint or backend was down ({reason}); they are recorded in "
        f"{outages_path(out)}, not in {out}, and no score counts them. Bring the service back and rerun {rerun} "
        "to run them again."
    )


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
    keep_failed: bool = False,
) -> SampleStats:
    """Run every (question, sample index) not yet in `out`; each trajectory is written when it finishes.

    Outages go to `outages_path(out)`; with `keep_failed` those already recorded are not run again.
    """
    stats = SampleStats()
    outage_file = outages_path(out)
    with contextlib.ExitStack() as files:
        sink = files.enter_context(JsonlAppender(out))
        # Opened (and a torn tail repaired) only when there is one: the first outage makes the file.
        outage_sink = files.enter_context(JsonlAppender(outage_file)) if outage_file.exists() else None
        todo = []
        for item in items:
            for s in range(n):
                key = f"{item.id}:{s}"
                if key in sink or (keep_failed and outage_sink is not None and key in outage_sink):
                    stats.already_there += 1
                else:
                    todo.append((item, s))
        stats.planned = len(todo)

        def done(traj: Trajectory) -> None:
            nonlocal outage_sink
            if traj.termination == "outage":
                if outage_sink is None:
                    outage_sink = files.enter_context(JsonlAppender(outage_file))
                outage_sink.write(traj)
                stats.outage_reasons[(traj.error or "")[:300]] += 1
            else:
                sink.write(traj)
                stats.done += 1
                stats.correct += quick_correct(traj)
                stats.terminations[traj.termination] += 1
                stats.completion_tokens += traj.usage.completion_tokens
            if on_update is not None:
                on_update(stats)

        async def tick() -> None:  # the status line moves while nothing finishes (an endpoint paused)
            while True:
                await asyncio.sleep(2.0)
                on_update(stats)

        ticker = asyncio.ensure_future(tick()) if on_update is not None else None
        try:
            await run_many(agent, todo, concurrency, on_done=done)
        finally:
            if ticker is not None:
                ticker.cancel()
    store = getattr(getattr(agent, "toolbox", None), "store", None)
    if store is not None:
        stats.tool_store = store.summary()
    return stats
