"""`webdancer filter`: validity -> correctness -> quality, streamed, with a report of every drop reason.

Memory stays flat on large files: records are read in chunks, and only (question, length, line)
triples of survivors are kept for the final "shortest per question" pass.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from webdancer.config import FilterConfig, WebdancerConfig
from webdancer.jsonl import atomic_write_json, iter_json_lines
from webdancer.records import Trajectory
from webdancer.reference import is_reference_record, load_trajectory, reference_to_trajectory
from webdancer.rewards import RewardSet, reward_input
from webdancer.scoring import normalize_answer
from webdancer.typed import to_dict
from webdancer.wire import validate_arguments

CHUNK = 256


def validity_problem(traj: Trajectory, cfg: FilterConfig) -> Optional[str]:
    """Stage 1: the rollout is well-formed end to end."""
    if any(s.parse_error for s in traj.steps):
        return "parse_error"
    if any(s.wrote_tool_response for s in traj.steps):
        return "wrote_tool_response"
    schemas = {t.get("name"): t.get("parameters", {}) for t in traj.tools}
    for step in traj.steps:
        if step.tool_call is None:
            continue
        if step.tool_call.name not in schemas:
            return "unknown_tool"
        if validate_arguments(step.tool_call.arguments, schemas[step.tool_call.name]):
            return "invalid_arguments"
    if traj.termination != "answered" or not traj.steps or traj.steps[-1].answer is None or traj.answer is None:
        return "no_answer"
    if sum(1 for s in traj.steps if s.answer is not None) != 1:
        return "no_answer"
    if len(traj.steps) > cfg.max_turns or sum(len(m.content) for m in traj.messages) > cfg.max_chars:
        return "too_long"
    return None


def quality_problem(traj: Trajectory, cfg: FilterConfig) -> Optional[str]:
    """Stage 3: no loops, no answer the observations do not support, no run-away thoughts."""
    calls = [json.dumps([s.tool_call.name, s.tool_call.arguments], sort_keys=True) for s in traj.steps if s.tool_call]
    if len(calls) != len(set(calls)):
        return "repeated_call"
    if any(len(s.thought) > cfg.max_thought_chars for s in traj.steps):
        return "long_thought"
    observed = " ".join(normalize_answer(s.tool_result.content) for s in traj.steps if s.tool_result and not s.tool_result.error)
    answer = normalize_answer(traj.answer or "")
    reference = normalize_answer(traj.reference_answer or "")
    # The final answer (or the reference fact it states) must appear in something a tool returned.
    supported = any(x and f" {x} " in f" {observed} " for x in (answer, reference))
    if not supported and answer:
        tokens = [t for t in answer.split() if len(t) > 2]
        supported = bool(tokens) and sum(t in observed.split() for t in tokens) / len(tokens) >= 0.8
    if not supported:
        return "unsupported_answer"
    return None


@dataclass
class FilterReport:
    total: int = 0
    kept: int = 0
    dropped: dict[str, Counter] = field(default_factory=lambda: {"validity": Counter(), "correctness": Counter(), "quality": Counter()})
    by_policy: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    correctness_method: str = ""  # the rewards that decide, e.g. format+answer
    rewards: dict[str, Any] = field(default_factory=dict)  # each with its weight and options (RewardSet.describe)
    judge_failed: int = 0  # trajectories the judge refused, decided by the match rule instead

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "kept": self.kept,
            "correctness_method": self.correctness_method,
            "rewards": self.rewards,
            "judge_failed": self.judge_failed,
            "dropped": {k: dict(v) for k, v in self.dropped.items()},
            "by_policy": {k: dict(v) for k, v in self.by_policy.items()},
        }


async def _correct(trajs: list[Trajectory], rewards: RewardSet, concurrency: int, report: FilterReport) -> list[bool]:
    """The correctness stage: each trajectory scored by the configured rewards (as eval and RL score)."""
    sem = asyncio.Semaphore(concurrency)

    async def one(t: Trajectory) -> bool:
        async with sem:
            sample = reward_input(t)
            scored = await rewards.score(sample)
        report.judge_failed += bool(scored.judge_error)
        return scored.correct

    return list(await asyncio.gather(*(one(t) for t in trajs)))


async def filter_file(src: Path, out: Path, cfg: FilterConfig, rewards: RewardSet, concurrency: int = 16) -> FilterReport:
    """Filter `src` into `out` (written atomically); reference-release records are converted on the fly."""
    report = FilterReport(correctness_method=rewards.label, rewards=rewards.describe())
    survivors: list[tuple[str, int, int]] = []  # (question id, steps, line number)
    chunk: list[tuple[int, Trajectory]] = []

    async def flush() -> None:
        valid = []
        for lineno, traj in chunk:
            problem = validity_problem(traj, cfg)
            if problem:
                report.dropped["validity"][problem] += 1
                report.by_policy[traj.policy][f"validity:{problem}"] += 1
            elif not traj.reference_answer:
                report.dropped["correctness"]["no_reference_answer"] += 1
                report.by_policy[traj.policy]["correctness:no_reference_answer"] += 1
            else:
                valid.append((lineno, traj))
        verdicts = await _correct([t for _, t in valid], rewards, concurrency, report)
        for (lineno, traj), ok in zip(valid, verdicts):
            if not ok:
                report.dropped["correctness"]["wrong_answer"] += 1
                report.by_policy[traj.policy]["correctness:wrong_answer"] += 1
                continue
            problem = quality_problem(traj, cfg)
            if problem:
                report.dropped["quality"][problem] += 1
                report.by_policy[traj.policy][f"quality:{problem}"] += 1
                continue
            survivors.append((traj.question_id or traj.question, len(traj.steps), lineno))
        chunk.clear()

    for lineno, obj in iter_json_lines(src):
        report.total += 1
        chunk.append((lineno, load_trajectory(obj, f"{src}:{lineno}")))
        if len(chunk) >= CHUNK:
            await flush()
    await flush()
    keep: set[int] = set()
    per_question: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for qid, steps, lineno in survivors:
        per_question[qid].append((steps, lineno))
    for qid, items in per_question.items():
        items.sort()
        chosen = items if cfg.keep_per_question <= 0 else items[: cfg.keep_per_question]
        keep.update(lineno for _, lineno in chosen)
        if len(items) > len(chosen):
            report.dropped["quality"]["not_shortest"] += len(items) - len(chosen)
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", encoding="utf-8") as fh:
        for lineno, obj in iter_json_lines(src):
            if lineno in keep:
                # Our own records were validated in pass 1 and are copied as they are.
                data = to_dict(reference_to_trajectory(obj)) if is_reference_record(obj) else obj
                fh.write(json.dumps(data, ensure_ascii=False) + "\n")
                report.kept += 1
                report.by_policy[data.get("policy", "")]["kept"] += 1
    tmp.replace(out)
    return report


async def filter_configured(src: Path, out: Path, cfg: WebdancerConfig) -> FilterReport:
    """`filter_file` with the run's rewards (`rewards`, `judge`), closed when it ends."""
    rewards = RewardSet.from_config(cfg)
    try:
        return await filter_file(src, out, cfg.filter, rewards, cfg.judge.concurrency)
    finally:
        await rewards.aclose()


def write_report(report: FilterReport, path: Path) -> None:
    atomic_write_json(path, report.to_json())
