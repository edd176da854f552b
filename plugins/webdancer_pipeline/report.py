"""`runs/<run>/report.md` and `report.html`: what a person reads instead of the logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from webdancer.jsonl import atomic_write_text
from webdancer_pipeline.config import EVAL_TITLES


def _plot(series: dict[str, list[tuple[float, float]]], ylabel: str, title: str, out: Path) -> bool:
    """A line per series of (step, value) points, saved atomically; False when there is nothing to plot."""
    series = {name: points for name, points in series.items() if points}
    if not series:
        return False
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, points in series.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return True


def _plot_loss(log: Path, out: Path) -> bool:
    if not log.is_file():
        return False
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return _plot({"loss": [(r["current_steps"], r["loss"]) for r in rows if "loss" in r]}, "training loss", "SFT (LLaMA-Factory)", out)


def _rl_section(rl_dir: Path, run_dir: Path, summary: dict[str, Any]) -> list[str]:
    from webdancer_rl.metrics import read_metrics

    engine = summary.get("engine", "verl")
    md = [f"## RL ({engine}, DAPO)", ""]
    head = f"Prepared {summary['train_rows']} train / {summary['val_rows']} val rows; "
    if not summary.get("trained"):
        return md + [head + f"not trained: {summary.get('why_not_trained')}. Native command: `{summary['command']}`.", ""]
    rows = read_metrics(rl_dir / "metrics.jsonl")
    steps = summary.get("steps", len(rows))
    window = min(5, steps)
    md.append(head + f"{steps} steps, {summary.get('seconds_per_step', 0):.0f} s per step; mean training reward "
              f"{summary.get('reward_first', float('nan')):.3f} (first {window} steps) -> {summary.get('reward_last', float('nan')):.3f} "
              f"(last {window}). Metrics: `{rl_dir / 'metrics.jsonl'}`, rollouts to read: `{rl_dir / 'samples.jsonl'}`, "
              f"command: `{summary['command']}`.")
    names = sorted({k.split("/")[1] for r in rows for k in r if k.startswith("reward/") and k.count("/") == 2})
    series = {"reward": [(r["step"], r["reward/mean"]) for r in rows if "reward/mean" in r]}
    series.update({name: [(r["step"], r[f"reward/{name}/mean"]) for r in rows if f"reward/{name}/mean" in r] for name in names})
    heldout = [(r["step"], r["heldout/reward/mean"]) for r in rows if "heldout/reward/mean" in r]
    if heldout:
        series["held-out reward"] = heldout
    if _plot(series, "mean reward", f"RL ({engine})", run_dir / "rl_reward.png"):
        md += ["", "![RL reward per step](rl_reward.png)"]
    first: dict[str, int] = {}
    for r in rows:
        for name in r.get("alarms", []):
            first.setdefault(name, r["step"])
    md += ["", "Training-health alarms: " + (", ".join(f"**{n}** (from step {step}, held at {sum(n in r.get('alarms', []) for r in rows)} "
                                                       f"steps)" for n, step in first.items()) if first else "none raised") +
           f" (the messages are in `{rl_dir / 'train.log'}`; thresholds `rl.alarm_*`)."]
    return md + [""]


def _counts(stages: dict[str, Any]) -> list[str]:
    s = {k: v.get("summary", {}) for k, v in stages.items()}
    rows = [("offline web pages", s.get("web", {}).get("pages")),
            ("CrawlQA questions", s.get("synth", {}).get("crawlqa")),
            ("E2HQA questions", s.get("synth", {}).get("e2hqa")),
            ("training / held-out questions", f"{s.get('split', {}).get('train')} / {s.get('split', {}).get('eval')}" if "split" in s else None)]
    for policy, info in s.get("sample", {}).items():
        rows.append((f"trajectories sampled ({policy}, new this run)", info.get("new")))
    for policy in ("expert", "model"):
        info = s.get("filter", {}).get(policy)
        if info:
            rows.append((f"kept by the filter ({policy})", f"{info['kept']} of {info['total']}"))
    if "sft" in s:
        rows.append(("SFT examples", s["sft"].get("exported")))
    if "rl" in s:
        rows.append(("RL train / val rows", f"{s['rl'].get('train_rows')} / {s['rl'].get('val_rows')}"))
    lines = ["| what | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows if v is not None]
    return lines


def _drops(stages: dict[str, Any]) -> list[str]:
    lines = []
    for policy, info in (stages.get("filter", {}).get("summary", {}) or {}).items():
        if not isinstance(info, dict):
            continue
        reasons = [f"{stage}/{reason}: {n}" for stage, rs in info.get("dropped", {}).items() for reason, n in rs.items()]
        lines.append(f"- {policy}: " + (", ".join(reasons) if reasons else "nothing dropped") + f" (correctness: {info.get('correctness_method')})")
    return lines or ["- the filter has not run"]


def write_report(run_dir: Path, state: dict[str, Any], sft_dir: Path, rl_dir: Path) -> dict[str, Any]:
    stages = state.get("stages", {})
    md = [f"# Run report: {run_dir.name}", "", "## Counts", "", *_counts(stages), "", "## Why trajectories were dropped", "", *_drops(stages), ""]
    if _plot_loss(sft_dir / "trainer_log.jsonl", run_dir / "sft_loss.png"):
        sft = stages.get("sft", {}).get("summary", {})
        losses = sft.get("losses") or [sft.get("loss_first"), sft.get("loss_last")]
        if None in losses:  # a run that did not record SFT's summary (a seed run sharing another run's SFT): its log
            from webdancer_sft.train import training_losses

            losses = training_losses(sft_dir) or [float("nan")]
        md += ["## SFT", "", f"Loss {losses[0]:.3f} -> {losses[-1]:.3f} (log: `{sft_dir}/trainer_log.jsonl`, command: `{sft_dir}/command.sh`).",
               "", "![SFT loss](sft_loss.png)", ""]
    rl = stages.get("rl", {}).get("summary")
    if rl:
        md += _rl_section(rl_dir, run_dir, rl)
    compare = run_dir / "eval" / "compare.md"
    if compare.is_file():
        body = compare.read_text(encoding="utf-8").split("\n", 1)[1]
        runs = [name for name in EVAL_TITLES if (run_dir / "eval" / name / "results.json").is_file()]
        title = " / ".join(EVAL_TITLES[n] for n in runs)
        md += [f"## Evaluation on held-out questions: {title}", "", body.strip(), "", "![eval](eval/compare.png)", ""]
    else:
        for name in EVAL_TITLES:
            report = run_dir / "eval" / name / "report.md"
            if report.is_file():
                md += [f"## Evaluation ({name})", "", report.read_text(encoding="utf-8").split("\n", 1)[1].strip(), ""]
    md += ["## Timings and memory", "",
           "Peak memory: the resident memory of the pipeline and every process it started, summed at one moment (pages a "
           "forked process shares are counted twice), and the largest single process.", "",
           "| stage | seconds | peak memory, all processes | largest process | finished |", "|---|---|---|---|---|"]
    md += [f"| {name} | {info['seconds']:.0f} | {_gb(info.get('peak_rss_gb'))} | {_gb(info.get('peak_process_rss_gb'))} "
           f"{info.get('peak_process', '')} | {info['finished']} |" for name, info in stages.items()]
    peak = max((i.get("peak_rss_gb") or 0 for i in stages.values()), default=0)
    md += [f"| total | {sum(i['seconds'] for i in stages.values()):.0f} | {_gb(peak)} (highest) | | |", ""]
    text = "\n".join(md) + "\n"
    atomic_write_text(run_dir / "report.md", text)
    atomic_write_text(run_dir / "report.html", to_html(text, f"webdancer run {run_dir.name}"))
    return {"report": str(run_dir / "report.md"), "html": str(run_dir / "report.html")}


def _gb(value: float | None) -> str:
    """A stage recorded before memory was measured has none: shown as a dash, not as zero."""
    return "-" if not value else f"{value:.1f} GB"


def to_html(markdown: str, title: str) -> str:
    from markdown_it import MarkdownIt  # rich's own dependency

    body = MarkdownIt("commonmark").enable("table").render(markdown)
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style></head><body>{body}</body></html>\n"
