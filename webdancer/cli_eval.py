"""`webdancer eval run|compare`: benchmark runs with reports, and two runs side by side."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Optional

import click

from webdancer.config import WebdancerConfig


def default_eval_name(eval_file: str, cfg: WebdancerConfig) -> str:
    who = cfg.policy.name if cfg.policy.name != "openai" else Path(cfg.model.model.rstrip("/")).name or "model"
    return f"{Path(eval_file).stem}-{who}"


def build_judge(cfg: WebdancerConfig):
    """The `judge` reward plugin on `eval.judge`, or None for the exact/F1 match fallback."""
    if not cfg.eval.judge:
        return None
    from webdancer.config import validate_options
    from webdancer.plugins import get_plugins

    cls = get_plugins().get("rewards", "judge")
    return cls(validate_options(cls.Config, {"model": cfg.eval.judge, "prompt_file": cfg.eval.judge_prompt}, "eval.judge"))


def run_eval(cfg: WebdancerConfig, eval_file: str, fmt: str, name: str, on_update=None) -> dict:
    """Sample k runs per question (resumable), score them, write the report; returns results.json's content."""
    from webdancer.agent import Agent
    from webdancer.evalsets import EvalSetError, load_eval_set
    from webdancer.evaluation import EvalRun, score_trajectories, write_report
    from webdancer.policies import build_policy
    from webdancer.sampling import sample
    from webdancer.tools import ToolBox

    items = load_eval_set(eval_file, fmt)
    with_file = [item for item in items if item.provenance.get("file_name")]
    if cfg.eval.attachments == "skip" and with_file:
        items = [item for item in items if not item.provenance.get("file_name")]
        if not items:
            raise EvalSetError(f"{eval_file}: every question has an attached file; set eval.attachments=ask to ask them anyway")
    run = EvalRun(cfg.run.dir / "eval" / name)
    policy = build_policy(cfg.policy.name, cfg.policy.options, cfg.model)
    toolbox = ToolBox.from_config(cfg.agent.tools, cfg.tools, cfg.agent.tool_timeout_s)
    judge = build_judge(cfg)

    async def go() -> None:
        try:
            async with toolbox:
                await sample(Agent(policy, toolbox, cfg.agent), items, cfg.eval.k, run.trajectories, cfg.agent.concurrency, on_update)
            wanted = {item.id for item in items}
            trajs = [t for t in run.load()[0] if t.question_id in wanted]
            await score_trajectories(trajs, run.scores, judge, cfg.eval.f1_threshold, cfg.eval.judge_concurrency)
        finally:
            await policy.aclose()
            if judge is not None:
                await judge.aclose()

    asyncio.run(go())
    meta = {
        "name": name,
        "eval_file": str(eval_file),
        "policy": cfg.policy.name,
        "model": cfg.model.model if cfg.policy.name == "openai" else cfg.policy.name,
        "judge": cfg.eval.judge.get("model", "?") if cfg.eval.judge else "none (exact match / token F1)",
        "max_turns": cfg.agent.max_turns,
        **({"attachments": f"{len(with_file)} questions with an attached file {'skipped' if cfg.eval.attachments == 'skip' else 'asked without the file'} (eval.attachments)"} if with_file else {}),
        "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return write_report(run, items, meta, cfg.eval.k)


@click.group("eval")
def eval_group() -> None:
    """Evaluate the agent on GAIA / WebWalkerQA / BrowseComp / our QA files, and compare runs."""


@eval_group.command("run")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None, help="YAML config (see configs/).")
@click.argument("eval_file", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["auto", "gaia", "webwalkerqa", "browsecomp", "qa"]), default="auto", show_default=True)
@click.option("--k", type=int, default=None, help="Runs per question (default eval.k).")
@click.option("--name", default=None, help="Run name: results go to runs/<run>/eval/<name>/ (default <file stem>-<model>).")
def eval_run(config_path: Optional[str], eval_file: str, overrides: tuple[str, ...], fmt: str, k: Optional[int], name: Optional[str]) -> None:
    """Run the agent k times on every question of EVAL_FILE, judge, and write results.json, report.md, plot.png."""
    from rich.console import Console
    from rich.markdown import Markdown

    from webdancer.config import load_config

    cfg = load_config(config_path, overrides)
    if k is not None:
        if k < 1:
            raise click.BadParameter("must be at least 1", param_hint="--k")
        cfg.eval.k = k
    name = name or default_eval_name(eval_file, cfg)

    def show(stats) -> None:
        click.echo(f"\r  runs {stats.done}/{stats.planned} ({stats.already_there} already there)", nl=False, err=True)

    results = run_eval(cfg, eval_file, fmt, name, show)
    click.echo("", err=True)
    out_dir = cfg.run.dir / "eval" / name
    Console().print(Markdown((out_dir / "report.md").read_text(encoding="utf-8")))
    o = results["overall"]
    click.echo(f"Pass@1 {100 * o['pass_at_1']:.1f}%  Pass@{o['k']} {100 * o['pass_at_k']:.1f}%  -> {out_dir}/(results.json, report.md, plot.png)")


@eval_group.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Also write compare.md and compare.png here.")
def eval_compare(runs: tuple[str, ...], out: Optional[str]) -> None:
    """Show eval runs (folders or results.json files) side by side, e.g. before vs after SFT."""
    from rich.console import Console
    from rich.markdown import Markdown

    from webdancer.evaluation import load_results, plot_results, render_comparison
    from webdancer.jsonl import atomic_write_text

    if len(runs) < 2:
        raise click.UsageError("give at least two runs to compare")
    loaded: dict[str, dict] = {}
    for path in runs:
        res = load_results(path)
        label = res.get("meta", {}).get("name") or Path(path).name
        while label in loaded:
            label += "'"
        loaded[label] = res
    text = render_comparison(loaded)
    Console().print(Markdown(text))
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out) / "compare.md", text)
        plot_results(loaded, Path(out) / "compare.png")
        click.echo(f"-> {out}/compare.md, {out}/compare.png")
