"""`webdancer eval`: k rollouts per question, judged, summarized as Pass@1 / Pass@k with a report.

A run folder holds `trajectories.jsonl` and `scores.jsonl` (both append-only, so an interrupted
eval resumes where it stopped) and `results.json`, `report.md`, `plot.png` (rewritten atomically
from those two files each time). Runs that an outage ended are in `trajectories.outages.jsonl`,
never scored; until a rerun replaces them, results.json says `complete: false`.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from webdancer import aio
from webdancer.config import WebdancerConfig
from webdancer.errors import OutageError
from webdancer.evaluation.report import plot_results, render_markdown
from webdancer.evaluation.scores import Score, score_trajectories, summarize
from webdancer.evaluation.tool_sessions import record_tool_session, tool_session_totals
from webdancer.jsonl import atomic_write_json, atomic_write_text, iter_json_lines, read_records
from webdancer.leaks import Blocklist
from webdancer.records import QAItem, Trajectory
from webdancer.rewards import RewardSet
from webdancer.runs import outages_path

# The numbers of an eval run that go to the experiment tracker.
TRACKED = ("questions", "trajectories", "pass_at_1", "pass_at_k", "valid_tool_call_turns", "well_formed_turns", "answered",
           "mean_turns", "mean_tool_calls", "mean_completion_tokens")


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
