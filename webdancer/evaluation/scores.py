"""Scoring an eval's trajectories and the numbers of results.json: Pass@1 / Pass@k with bootstrap intervals."""

from __future__ import annotations

import asyncio
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from webdancer.errors import OutageError
from webdancer.jsonl import JsonlAppender
from webdancer.records import QAItem, Trajectory
from webdancer.rewards import RewardSet, reward_input
from webdancer.stats import bootstrap_ci


@dataclass
class Score:
    id: str  # the trajectory's id
    question_id: str
    correct: bool  # the weighted score reached half the weights' sum (webdancer.rewards.CORRECT_AT)
    method: str  # the rewards that decided (e.g. format+judge) | match (judge failed: ...) | no answer
    score: float = 0.0  # the weighted sum of `rewards`
    rewards: dict[str, float] = field(default_factory=dict)  # each reward's value


async def score_trajectories(trajs: list[Trajectory], out: Path, rewards: RewardSet, concurrency: int = 8) -> None:
    """Append a Score for every trajectory not yet scored, with the configured rewards; a judge's refusals fall
    back to matching, its outages leave the trajectory unscored for a rerun."""
    sem = asyncio.Semaphore(concurrency)
    with JsonlAppender(out) as sink:
        todo = [t for t in trajs if t.id not in sink]

        async def one(t: Trajectory) -> None:
            answer = t.answer or ""
            sample = reward_input(t)
            try:
                async with sem:
                    scored = await rewards.score(sample)
            except OutageError:
                return  # the judge is down: not scored (the run counts as missing), a rerun scores it
            method = "no answer" if not answer else f"match (judge failed: {scored.judge_error})" if scored.judge_error else rewards.label
            sink.write(Score(t.id, t.question_id, scored.correct, method, round(scored.score, 6), scored.parts))

        await asyncio.gather(*(one(t) for t in todo))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k from n samples with c correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass
class Summary:
    questions: int = 0
    trajectories: int = 0
    k: int = 1
    pass_at_1: float = 0.0  # mean over questions of correct/n: Pass@1 averaged over the k runs (Avg@k)
    pass_at_k: float = 0.0
    # 95 % percentile-bootstrap intervals over questions (webdancer.stats).
    pass_at_1_ci: list[float] = field(default_factory=lambda: [0.0, 0.0])
    pass_at_k_ci: list[float] = field(default_factory=lambda: [0.0, 0.0])
    mean_turns: float = 0.0
    mean_tool_calls: float = 0.0
    mean_prompt_tokens: float = 0.0
    mean_completion_tokens: float = 0.0
    # Of the turns that did not give the final answer: share that made a well-formed call to a known tool.
    valid_tool_call_turns: float = 0.0
    # Of all turns: share that parsed (a tool call or an answer, no format error).
    well_formed_turns: float = 0.0
    answered: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    judged_by: dict[str, int] = field(default_factory=dict)


def question_rates(counts: dict[str, tuple[int, int]], k: int) -> tuple[dict[str, float], dict[str, float]]:
    """Each question's Pass@1 (its share of correct runs) and unbiased Pass@k, from its (runs, correct)."""
    at_1 = {q: c / n for q, (n, c) in counts.items()}
    at_k = {q: pass_at_k(n, c, min(k, n)) for q, (n, c) in counts.items()}
    return at_1, at_k


def _summarize(pairs: list[tuple[Trajectory, Score]], k: int) -> Summary:
    by_q: dict[str, list[bool]] = defaultdict(list)
    turns = calls = prompt = completion = 0
    non_answer_turns = valid_calls = all_turns = well_formed = answered = 0
    failures: Counter = Counter()
    methods: Counter = Counter()
    for traj, score in pairs:
        by_q[traj.question_id].append(score.correct)
        turns += len(traj.steps)
        calls += sum(1 for s in traj.steps if s.tool_call is not None)
        prompt += traj.usage.prompt_tokens
        completion += traj.usage.completion_tokens
        for step in traj.steps:
            all_turns += 1
            well_formed += step.parse_error is None and not step.wrote_tool_response
            if step.answer is None or step.parse_error is not None:
                non_answer_turns += 1
                ok = step.tool_call is not None and step.parse_error is None
                ok = ok and step.tool_result is not None and not step.tool_result.content.startswith("[format error]")
                valid_calls += ok
        answered += traj.termination == "answered"
        if not score.correct:
            failures["wrong_answer" if traj.termination == "answered" else traj.termination] += 1
        methods[score.method.split(" (")[0] if score.method.startswith("match (") else score.method] += 1
    n_traj = max(1, len(pairs))
    at_1, at_k = question_rates({q: (len(v), sum(v)) for q, v in by_q.items()}, k)
    return Summary(
        questions=len(by_q),
        trajectories=len(pairs),
        k=k,
        pass_at_1=sum(at_1.values()) / max(1, len(by_q)),
        pass_at_k=sum(at_k.values()) / max(1, len(by_q)),
        pass_at_1_ci=list(bootstrap_ci(list(at_1.values()))),
        pass_at_k_ci=list(bootstrap_ci(list(at_k.values()))),
        mean_turns=turns / n_traj,
        mean_tool_calls=calls / n_traj,
        mean_prompt_tokens=prompt / n_traj,
        mean_completion_tokens=completion / n_traj,
        valid_tool_call_turns=valid_calls / max(1, non_answer_turns),
        well_formed_turns=well_formed / max(1, all_turns),
        answered=answered / n_traj,
        failures=dict(failures.most_common()),
        judged_by=dict(methods),
    )


def summarize(items: list[QAItem], trajs: list[Trajectory], scores: dict[str, Score], k: int) -> dict[str, Any]:
    """Overall and per-group summaries (groups from the eval set: level, type, difficulty, topic, tag)."""
    groups_of = {item.id: item.provenance.get("groups", {}) for item in items}
    pairs = [(t, scores[t.id]) for t in trajs if t.id in scores and t.question_id in groups_of]
    # Runs not scored (an outage ended them, or the run was stopped) are missing, never wrong.
    missing = len(items) * k - len(pairs)
    by_q: dict[str, list[bool]] = defaultdict(list)
    for traj, score in pairs:
        by_q[traj.question_id].append(score.correct)
    # Per question, so that `eval compare` can pair two runs question by question.
    per_question = {q: {"runs": len(v), "correct": sum(v)} for q, v in sorted(by_q.items())}
    result: dict[str, Any] = {"complete": missing <= 0, "incomplete_runs": max(0, missing),
                              "overall": asdict(_summarize(pairs, k)), "groups": {}, "per_question": per_question}
    keys = sorted({key for g in groups_of.values() for key in g})
    for key in keys:
        buckets: dict[str, list] = defaultdict(list)
        for traj, score in pairs:
            buckets[str(groups_of[traj.question_id].get(key, "unknown"))].append((traj, score))
        result["groups"][key] = {value: asdict(_summarize(ps, k)) for value, ps in sorted(buckets.items())}
    return result
