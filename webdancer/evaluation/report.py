"""What a person reads of eval results: report.md, the plot, the comparison of runs, the one-line summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from webdancer.errors import WebdancerError
from webdancer.evaluation.scores import question_rates
from webdancer.stats import paired_difference


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
