"""The quickstart's latest run as benchmark rows: wall time and peak memory per stage, held-out Pass@1 and valid
tool-call turns before SFT, after SFT and after RL. Reads what `bash scripts/quickstart.sh` leaves in runs/quickstart;
time the quickstart alone (nothing else on the machine) before saving its rows.

    WEBDANCER_BENCH_SAVE=1 .venv/bin/python benchmarks/quickstart_run.py   # then: benchmarks/run_all.py --table, scripts/gen_docs.py

Ratios: a stage's share of the whole run's time; peak memory against the 8 GB a laptop can give it; Pass@1 and
valid tool-call turns as fractions (the value is the same number in percent).
"""

from __future__ import annotations

import json

from _common import QUICKSTART_RUN, Row, emit, need_quickstart

MEMORY_TARGET_GB = 8.0
EVALS = {"before": "before SFT", "after": "after SFT", "after_rl": "after RL"}


def rows() -> list[Row]:
    need_quickstart(QUICKSTART_RUN / "pipeline.json")
    stages = json.loads((QUICKSTART_RUN / "pipeline.json").read_text())["stages"]
    total = sum(s["seconds"] for s in stages.values())
    out = [Row("quickstart", "whole run (environments set up)", total / 60, "min", 1.0, "of the whole run", "report", True)]
    out += [Row("quickstart", f"stage {name}", s["seconds"], "s", s["seconds"] / total, "of the whole run", "report", True)
            for name, s in stages.items() if s["seconds"] >= 1]
    reused = [name for name, key in (("web", "built"), ("model", "exported")) if stages.get(name, {}).get("summary", {}).get(key) is False]
    if reused:
        out[0] = Row("quickstart", f"whole run (environments set up, {' and '.join(reused)} built before)", total / 60, "min", 1.0,
                     "of the whole run", "report", True)
    measured = {name: s for name, s in stages.items() if s.get("peak_rss_gb")}
    if measured:
        name, top = max(measured.items(), key=lambda kv: kv[1]["peak_rss_gb"])
        out.append(Row("quickstart", f"peak memory, all processes ({name})", top["peak_rss_gb"], "GB", top["peak_rss_gb"] / MEMORY_TARGET_GB,
                       "of 8 GB", "< 8 GB", top["peak_rss_gb"] < MEMORY_TARGET_GB))
        name, top = max(measured.items(), key=lambda kv: kv[1]["peak_process_rss_gb"])
        out.append(Row("quickstart", f"largest process ({name}: {top['peak_process']})", top["peak_process_rss_gb"], "GB",
                       top["peak_process_rss_gb"] / MEMORY_TARGET_GB, "of 8 GB", "report", True))
    for name, title in EVALS.items():
        results = QUICKSTART_RUN / "eval" / name / "results.json"
        if results.is_file():
            o = json.loads(results.read_text())["overall"]
            lo, hi = o["pass_at_1_ci"]
            out.append(Row("quickstart", f"held-out Pass@1 {title} ({o['questions']} q, 95% CI {lo:.0%}-{hi:.0%})", 100 * o["pass_at_1"], "%",
                           o["pass_at_1"], "fraction", "report", True))
            out.append(Row("quickstart", f"valid tool-call turns {title}", 100 * o["valid_tool_call_turns"], "%", o["valid_tool_call_turns"],
                           "fraction", "report", True))
    return out


if __name__ == "__main__":
    emit(rows())
