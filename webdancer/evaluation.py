"""`webdancer eval`: k rollouts per question, judged, summarized as Pass@1 / Pass@k with a report.

A run folder holds `trajectories.jsonl` and `scores.jsonl` (both append-only, so an interrupted
eval resumes where it stopped) and `results.json`, `report.md`, `plot.png` (rewritten atomically
from those two files each time). Runs that an outage ended are in `trajectories.outages.jsonl`,
never scored; until a rerun replaces them, results.json says `complete: false`.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import json
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from webdancer import aio
from webdancer.config import WebdancerConfig
from webdancer.errors import OutageError, WebdancerError
from webdancer.jsonl import JsonlAppender, atomic_write_json, atomic_write_text, iter_json_lines, read_records
from webdancer.leaks import Blocklist
from webdancer.records import QAItem, Trajectory
from webdancer.rewards import RewardInput, RewardSet
from webdancer.runs import outages_path
from webdancer.stats import bootstrap_ci, paired_difference

# The numbers of an eval run that go to the experiment tracker.
TRACKED = ("questions", "trajectories", "pass_at_1", "pass_at_k", "valid_tool_call_turns", "well_formed_turns", "answered",
           "mean_turns", "mean_tool_calls", "mean_completion_tokens")


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
            sample = RewardInput(question=t.question, response=answer, reference=t.reference_answer or "", answer=answer or None, trajectory=t)
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


@dataclass
class EvalRun:
    """Where one evaluation lives on disk."""

    dir: Path

    @property
    def trajectories(self) -> Path:
        return self.dir / "trajectories.jsonl"

    @property
    def scores(self) -> Path:
        return self.dir / "scores.jsonl"

    @property
    def results(self) -> Path:
        return self.dir / "results.json"

    @property
    def submission(self) -> Path:
        return self.dir / "submission.jsonl"  # answers to questions whose reference is withheld (GAIA's test split)

    @property
    def tool_sessions(self) -> Path:
        return self.dir / "tool_sessions.jsonl"  # one line per sampling session: blocked results, tool store counts

    def load(self) -> tuple[list[Trajectory], dict[str, Score]]:
        trajs = list(read_records(self.trajectories, Trajectory)) if self.trajectories.exists() else []
        scores = {s.id: s for s in read_records(self.scores, Score)} if self.scores.exists() else {}
        return trajs, scores


def write_report(run: EvalRun, items: list[QAItem], meta: dict[str, Any], k: int) -> dict[str, Any]:
    """results.json + report.md + plot.png from what is on disk now."""
    trajs, scores = run.load()
    withheld = [item for item in items if item.provenance.get("answer_withheld")]
    scorable = [item for item in items if not item.provenance.get("answer_withheld")]
    results = {"meta": meta, **summarize(scorable, trajs, scores, k), **tool_session_totals(run.tool_sessions)}
    if withheld:  # GAIA's test split: the answers go to its leaderboard, which scores them
        answered = write_submission(run, withheld, trajs)
        runs_missing = len(withheld) * k - sum(1 for t in trajs if t.question_id in {i.id for i in withheld})
        results["withheld"] = {"questions": len(withheld), "answered": answered, "submission": str(run.submission)}
        results["incomplete_runs"] += max(0, runs_missing)
        results["complete"] = results["incomplete_runs"] <= 0
    if not results["complete"]:
        results["outages"] = _count_ids(outages_path(run.trajectories), {t.id for t in trajs})
        results["unscored"] = sum(1 for t in trajs if t.id not in scores)  # the judge was down
    atomic_write_json(run.results, results)
    atomic_write_text(run.dir / "report.md", render_markdown(results))
    plot_results({meta.get("name", run.dir.name): results}, run.dir / "plot.png")
    return results


def write_submission(run: EvalRun, items: list[QAItem], trajs: list[Trajectory]) -> int:
    """GAIA's leaderboard file (`task_id`, `model_answer`, `reasoning_trace` per line) from each question's first run;
    returns how many questions have an answer."""
    first: dict[str, Trajectory] = {}
    for t in sorted(trajs, key=lambda t: t.sample_index):
        first.setdefault(t.question_id, t)
    lines = []
    for item in items:
        t = first.get(item.id)
        trace = " ".join(s.thought for s in t.steps if s.thought) if t else ""
        lines.append(json.dumps({"task_id": item.id, "model_answer": (t.answer or "") if t else "", "reasoning_trace": trace}, ensure_ascii=False))
    atomic_write_text(run.submission, "\n".join(lines) + "\n")
    return sum(1 for item in items if first.get(item.id) and first[item.id].answer)


def _count_ids(path: Path, besides: set[str]) -> int:
    """Ids recorded in `path` that are not in `besides` (outages that no later rerun replaced)."""
    if not path.exists():
        return 0
    return len({obj["id"] for _, obj in iter_json_lines(path)} - besides)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _interval(ci: list[float]) -> str:
    return f"{100 * ci[0]:.1f}–{100 * ci[1]:.1f}"


ROW_FIELDS = [
    ("questions", "questions", str),
    ("runs", "trajectories", str),
    ("Pass@1 (Avg@k) %", "pass_at_1", _pct),
    ("95 % CI", "pass_at_1_ci", _interval),
    ("Pass@k %", "pass_at_k", _pct),
    ("95 % CI", "pass_at_k_ci", _interval),
    ("answered %", "answered", _pct),
    ("valid tool-call turns %", "valid_tool_call_turns", _pct),
    ("well-formed turns %", "well_formed_turns", _pct),
    ("turns", "mean_turns", lambda x: f"{x:.2f}"),
    ("tool calls", "mean_tool_calls", lambda x: f"{x:.2f}"),
    ("prompt tok", "mean_prompt_tokens", lambda x: f"{x:.0f}"),
    ("completion tok", "mean_completion_tokens", lambda x: f"{x:.0f}"),
]


def _table(rows: list[tuple[str, dict[str, Any]]], first: str) -> str:
    head = [first] + [name for name, _, _ in ROW_FIELDS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, s in rows:
        lines.append("| " + " | ".join([label] + [fmt(s[key]) if key in s else "–" for _, key, fmt in ROW_FIELDS]) + " |")
    return "\n".join(lines)


def render_markdown(results: dict[str, Any]) -> str:
    meta, overall = results["meta"], results["overall"]
    out = [f"# Evaluation: {meta.get('name', '')}", ""]
    out += [f"- {key}: `{value}`" for key, value in meta.items() if key not in ("name", "rewards")]
    out += rewards_lines(meta.get("rewards", {}))
    if results.get("withheld"):
        w = results["withheld"]
        out.append(f"- answers withheld by the benchmark: {w['questions']} questions, not scored here; "
                   f"{w['answered']} answered in `{Path(w['submission']).name}` for its leaderboard")
    if "blocked" in results:
        b = results["blocked"]
        out.append(f"- leak blocking: {b['search_results']} search results dropped, {b['visits']} visits refused")
    for tool, c in results.get("tool_store", {}).items():
        out.append(f"- tool store, `{tool}`: {c.get('calls', 0)} calls, {c.get('hits', 0)} served from the store, "
                   f"{c.get('misses', 0)} called live (estimated cost {c.get('cost', 0):g}), {c.get('replay_misses', 0)} not recorded")
    out += ["", f"k = {overall['k']} runs per question; Pass@1 is averaged over them (Avg@k). Intervals: 95 % bootstrap "
            "over questions (another draw of questions of this kind would score within them 95 times in 100).", ""]
    if not results.get("complete", True):
        out += [f"**Incomplete:** {results['incomplete_runs']} of the planned runs are missing "
                f"({results.get('outages', 0)} ended by an outage of the model endpoint or a tool backend, "
                f"{results.get('unscored', 0)} not scored because the judge was down). "
                "They are not counted as wrong, nor at all; rerun the same command to run them.", ""]
    out += [_table([("all", overall)], "set"), ""]
    for key, buckets in results["groups"].items():
        out += [f"## By {key}", "", _table(list(buckets.items()), key), ""]
    out += ["## Why runs failed", ""]
    out += [f"- {reason}: {count}" for reason, count in overall["failures"].items()] or ["- none"]
    out += ["", "## Correctness decided by", ""]
    out += [f"- {method}: {count}" for method, count in overall["judged_by"].items()] or ["- nothing scored yet"]
    return "\n".join(out) + "\n"


def rewards_lines(described: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown bullets naming each reward scored with, its weight and its options (`RewardSet.describe`)."""
    lines = ["- scored with (correct at half the weights' sum):"] if described else []
    for name, info in described.items():
        options = ", ".join(f"{k} `{v}`" for k, v in info.items() if k != "weight")
        lines.append(f"  - `{name}` weight {info.get('weight')}" + (f": {options}" if options else ""))
    return lines


def plot_results(runs: dict[str, dict[str, Any]], path: Path) -> None:
    """Bars of Pass@1 and Pass@k overall and per group, one colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(runs.values()))
    panels = [("overall", {"all": None})] + [(key, buckets) for key, buckets in first["groups"].items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    width = 0.8 / (2 * len(runs))
    for ax, (key, buckets) in zip(axes[0], panels):
        labels = list(buckets)
        for r, (name, res) in enumerate(runs.items()):
            source = {"all": res["overall"]} if key == "overall" else res["groups"].get(key, {})
            for m, metric in enumerate(("pass_at_1", "pass_at_k")):
                xs = [i + (2 * r + m - len(runs)) * width + width / 2 for i in range(len(labels))]
                ys = [100 * source.get(label, {}).get(metric, 0.0) for label in labels]
                ax.bar(xs, ys, width, label=f"{name} {metric.replace('pass_at_', 'Pass@')}", alpha=1.0 if m == 0 else 0.55)
        ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(key)
        ax.set_ylabel("% correct")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def load_results(path: str | Path) -> dict[str, Any]:
    """A run's results.json, given the file or its folder."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise WebdancerError(f"{path}: no results.json there; run `webdancer eval run` first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WebdancerError(f"{path}: not valid JSON ({exc.msg})") from None


def render_comparison(runs: dict[str, dict[str, Any]]) -> str:
    names = list(runs)
    out = ["# Evaluation comparison", "", _table([(n, runs[n]["overall"]) for n in names], "run"), ""]
    for other in names[1:]:
        out += [f"**{other} vs {names[0]}** (paired by question, 95 % bootstrap intervals):", ""]
        out += [f"- {line}" for line in compare_pair(runs[names[0]], runs[other])] + [""]
    keys = sorted({key for r in runs.values() for key in r["groups"]})
    for key in keys:
        rows = [(f"{n} / {value}", s) for n in names for value, s in runs[n]["groups"].get(key, {}).items()]
        out += [f"## By {key}", "", _table(rows, f"run / {key}"), ""]
    return "\n".join(out) + "\n"


def compare_pair(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """B - A: Pass@1 and Pass@k paired by question with their intervals, then the other rates' differences."""
    lines = []
    if "per_question" in a and "per_question" in b:
        rates = [("Pass@1", 0)]
        if not a["overall"]["k"] == b["overall"]["k"] == 1:  # else Pass@k is Pass@1: one line, not the same line twice
            rates.append((f"Pass@{b['overall']['k']}", 1))
        for label, index in rates:
            per_a, per_b = (question_rates({q: (r["runs"], r["correct"]) for q, r in res["per_question"].items()},
                                           res["overall"]["k"])[index] for res in (a, b))
            d = paired_difference(per_a, per_b)
            verdict = "different" if d.distinguishable else "indistinguishable (the interval holds 0)"
            lines.append(f"{label} {100 * d.mean:+.1f} pts (95 % CI {100 * d.low:+.1f} to {100 * d.high:+.1f}, "
                         f"{d.questions} questions in both): {verdict}")
    else:
        lines.append("no paired difference: a results.json without per-question results (written by an older version); "
                     "rerun its `webdancer eval run` command, which resumes, samples nothing new and rewrites it")
    oa, ob = a["overall"], b["overall"]
    lines.append(", ".join(f"{label} {100 * (ob[key] - oa[key]):+.1f} pts" for label, key, fmt in ROW_FIELDS
                           if fmt is _pct and key not in ("pass_at_1", "pass_at_k")))
    return lines


def summary_line(results: dict[str, Any]) -> str:
    """The one line a person reads after an eval: Pass@1 (and Pass@k when k > 1) with its interval, over how many runs;
    an eval with nothing scored says so instead of a 0 % that is no result."""
    o = results["overall"]
    if not o["trajectories"]:
        return f"nothing scored: {results.get('incomplete_runs', 0)} planned run(s) missing (see below); no Pass@1 yet"
    line = f"Pass@1 {100 * o['pass_at_1']:.1f}% [{100 * o['pass_at_1_ci'][0]:.1f}, {100 * o['pass_at_1_ci'][1]:.1f}]"
    if o["k"] > 1:
        line += f"  Pass@{o['k']} {100 * o['pass_at_k']:.1f}%"
    line += f"  ({o['questions']} questions, {o['trajectories']} runs"
    return line + (f"; PARTIAL: {results['incomplete_runs']} run(s) missing)" if not results.get("complete", True) else ")")


def check_complete(results: dict[str, Any], out_dir: Path, rerun: str) -> None:
    """Raise one clear OutageError when runs are missing: such a result is not the model's score yet."""
    if results.get("complete", True):
        return
    raise OutageError(
        f"{out_dir}: {results['incomplete_runs']} planned run(s) are missing ({results.get('outages', 0)} ended by an "
        f"outage, recorded in {outages_path(EvalRun(out_dir).trajectories).name}; {results.get('unscored', 0)} not scored "
        "because the judge was down); results.json says complete: false. "
        f"Bring the service back and rerun {rerun} to run them."
    )


def default_eval_name(eval_file: str, cfg: WebdancerConfig) -> str:
    who = cfg.agent.policy if cfg.agent.policy != "openai" else Path(cfg.model.model.rstrip("/")).name or "model"
    return f"{Path(eval_file.split('#')[0]).stem}-{who}"


def with_blocklist(cfg: WebdancerConfig) -> WebdancerConfig:
    """A copy of `cfg` whose offered tools with a `blocklist` option also block `eval.blocklist` (checked here)."""
    from webdancer.plugins import get_plugins

    Blocklist(cfg.eval.blocklist, "eval.blocklist")  # a pattern that does not parse stops the run before any rollout
    if not cfg.eval.blocklist:
        return cfg
    cfg = copy.deepcopy(cfg)
    for name in cfg.agent.tools:
        options_cls = get_plugins().get("tools", name).Config
        if dataclasses.is_dataclass(options_cls) and "blocklist" in {f.name for f in dataclasses.fields(options_cls)}:
            options = dict(cfg.tools.get(name) or {})
            own = list(options.get("blocklist") or [])
            options["blocklist"] = own + [p for p in cfg.eval.blocklist if p not in own]
            cfg.tools[name] = options
    return cfg


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


def run_eval(cfg: WebdancerConfig, eval_file: str, fmt: str, name: str, on_update=None, keep_failed: bool = False,
             split: Optional[str] = None) -> dict:
    """Sample k runs per question (resumable), score them, write the report; returns results.json's content.

    Runs that an outage ended are left out (results.json says `complete: false`); a rerun runs them again.
    """
    from webdancer.agent import configured_agent
    from webdancer.evalsets import EvalSetError, load_eval_set
    from webdancer.sampling import sample

    items = load_eval_set(eval_file, fmt, split)
    with_file = [item for item in items if item.provenance.get("file_name")]
    if cfg.eval.attachments == "skip" and with_file:
        items = [item for item in items if not item.provenance.get("file_name")]
        if not items:
            raise EvalSetError(f"{eval_file}: every question has an attached file; set eval.attachments=ask to ask them anyway")
    run = EvalRun(cfg.run.dir / "eval" / name)
    rewards = RewardSet.from_config(cfg)
    cfg = with_blocklist(cfg)

    async def sample_and_score() -> None:
        try:
            async with configured_agent(cfg) as agent:
                try:
                    await sample(agent, items, cfg.eval.k, run.trajectories, cfg.agent.concurrency, on_update, keep_failed)
                finally:
                    record_tool_session(agent.toolbox, run.tool_sessions)
            wanted = {item.id for item in items if not item.provenance.get("answer_withheld")}  # nothing to score against
            trajs = [t for t in run.load()[0] if t.question_id in wanted]
            await score_trajectories(trajs, run.scores, rewards, cfg.judge.concurrency)
        finally:
            await rewards.aclose()

    aio.run(sample_and_score())
    meta = {
        "name": name,
        "eval_file": str(eval_file) + (f" [{split}]" if split else ""),
        "policy": cfg.agent.policy,
        "model": cfg.model.model if cfg.agent.policy == "openai" else cfg.agent.policy,
        "rewards": rewards.describe(),  # each reward's weight and options; the judge's model and prompt hash
        "blocklist": f"{len(cfg.eval.blocklist)} patterns (eval.blocklist)" if cfg.eval.blocklist else "off",
        "tool_store": f"{cfg.tool_store.mode} ({cfg.tool_store.dir})" if cfg.tool_store.mode != "off" else "off",
        "max_turns": cfg.agent.max_turns,
        **({"attachments": f"{len(with_file)} questions with an attached file {'skipped' if cfg.eval.attachments == 'skip' else 'asked without the file'} (eval.attachments)"} if with_file else {}),
        "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    results = write_report(run, items, meta, cfg.eval.k)
    from webdancer.tracking import track

    o = results["overall"]
    track(cfg, f"eval/{name}", {"complete": results["complete"], **{k: o[k] for k in TRACKED}, "pass_at_1_ci_low": o["pass_at_1_ci"][0],
                                "pass_at_1_ci_high": o["pass_at_1_ci"][1], "blocked": results.get("blocked", {})})
    return results
