"""Run every benchmark and print one table of ratios with the targets beside them.

    python benchmarks/run_all.py [--write]     # --write: also (re)write benchmarks/README.md from this run
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from _common import Row

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["agent_throughput.py", "web_tools.py", "tiny_model_serving.py", "serve_engines.py", "agent_context_decode.py", "synth_throughput.py", "sample_filter.py", "sft_launcher.py",
              "rl_adapters.py", "rl_step.py", "rl_rollout_engines.py", "rl_rollouts.py", "web_server.py", "tool_store.py", "corpus_scale.py"]
# Benchmarks of code that runs inside verl need verl's environment.
RL_PYTHON = HERE.parent / ".venvs" / "rl" / "bin" / "python"
NEEDS_RL = {"rl_adapters.py"}


def main() -> int:
    rows, failed = [], []
    env = dict(os.environ, WEBDANCER_BENCH_JSON="1")
    for name in BENCHMARKS:
        python = str(RL_PYTHON) if name in NEEDS_RL and RL_PYTHON.is_file() else sys.executable
        proc = subprocess.run([python, str(HERE / name)], cwd=HERE, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            failed.append(f"{name}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
            continue
        rows += [json.loads(line[6:]) for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    print(f"{'benchmark':<18} {'metric':<38} {'value':>10} {'unit':<8} {'ratio':>8}  {'ratio is':<30} {'target':<16} ok")
    for r in rows:
        print(f"{r['benchmark']:<18} {r['metric']:<38} {r['value']:>10.3f} {r['unit']:<8} {r['ratio']:>8.3f}  {r['ratio_meaning']:<30} {r['target']:<16} {'yes' if r['ok'] else 'NO'}")
    for f in failed:
        print(f"FAILED {f}")
    if "--write" in sys.argv[1:]:
        path = HERE / "README.md"
        kept = kept_notes(path.read_text(encoding="utf-8") if path.is_file() else "")
        path.write_text(readme([Row(**r) for r in rows], failed) + kept, encoding="utf-8")
        print(f"wrote {path}")
    return 1 if failed else 0


NOTES = "<!-- notes below: kept by run_all.py --write -->"


def kept_notes(old_readme: str) -> str:
    """What follows the NOTES marker in the README (spreads of runs made alone, explanations): a new table replaces
    the old one, the notes stay."""
    at = old_readme.find(NOTES)
    return "" if at < 0 else "\n" + old_readme[at:]


def readme(rows: list[Row], failed: list[str]) -> str:
    """benchmarks/README.md: this run's table, where and when it ran."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    lines = ["# Benchmarks", "",
             f"Written by `python benchmarks/run_all.py --write` on {dt.date.today().isoformat()}: {os.cpu_count()} cores ({cpu}), "
             f"Python {platform.python_version()}. Every ratio is measured within one run of its script (ours against a "
             "baseline or a limit in the same process and moment); machines are shared and noisy, so rerun before comparing.", "",
             "| benchmark | metric | value | ratio | ratio is | target | met |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.benchmark} | {r.metric} | {r.value:.3f} {r.unit} | {r.ratio:.3f} | {r.ratio_meaning} | {r.target} | "
                     f"{'yes' if r.ok else '**no**'} |")
    lines += [""] + [f"- failed to run: {f}" for f in failed]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.exit(main())
