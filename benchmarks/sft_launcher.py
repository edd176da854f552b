"""SFT adapter costs: export records/s (vs json.dumps of the same records, the floor), and the launcher's
overhead vs running `llamafactory-cli train` directly on the same YAML (target < 2 %).

The launcher also builds the dataset once with LLaMA-Factory's loader before training (it refuses
to train when examples would be skipped); that check is reported on its own line.
CPU SFT under bf16 autocast (`sft.cpu_autocast`) against fp32, where the CPU multiplies bf16 natively: seconds a
step (LLaMA-Factory's train_runtime over AUTOCAST_STEPS steps of the quickstart's shape: batch 2, cutoff 2048,
its kept expert trajectories), the two modes alternated twice, and how far the bf16 losses stray from fp32's.
Needs .venvs/sft (scripts/setup_sft.sh), the exported tiny model and runs/quickstart/kept_expert.jsonl
(scripts/quickstart.sh leaves both).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import BASE_MODEL as MODEL
from _common import OFFLINE, QUICKSTART_RUN, ROOT, Row, emit, need_quickstart

AUTOCAST_STEPS = 3

sys.path.insert(0, str(ROOT / "plugins"))
KEPT = QUICKSTART_RUN / "kept_expert.jsonl"


def main() -> None:
    from webdancer_sft.config import SftConfig
    from webdancer_sft.export import export_sft, load_trajectories, to_sharegpt
    from webdancer_sft.train import cli_path, inspect_dataset, llamafactory_yaml, run_training

    need_quickstart(KEPT, MODEL / "config.json")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        stats = export_sft(KEPT, tmp / "data")
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        json.dumps([to_sharegpt(t) for t in load_trajectories(KEPT)], ensure_ascii=False)
        floor_s = time.perf_counter() - start
        rows.append(Row("sft_export", "records/s (kept expert trajectories)", stats.exported / export_s, "rec/s", floor_s / export_s,
                        "of the in-memory floor", "report", True))
        # A small dataset so that one step is quick; the same YAML for both runs.
        records = json.loads((tmp / "data" / "webdancer_sft.json").read_text())[:4]
        (tmp / "data" / "webdancer_sft.json").write_text(json.dumps(records))
        cfg = SftConfig(model_path=str(MODEL), venv=str(ROOT / ".venvs/sft"), max_steps=1, per_device_train_batch_size=1, cutoff_len=1024, save_steps=1)
        start = time.perf_counter()
        inspect_dataset(cfg, tmp / "data")
        check_s = time.perf_counter() - start
        import yaml

        env = {**OFFLINE, "DISABLE_VERSION_CHECK": "1"}
        ours_runs, direct_runs = [], []
        for i in range(2):  # alternate, keep the best of each: one-step runs are noisy
            start = time.perf_counter()
            run_training(cfg, tmp / "data", tmp / f"ours{i}", echo=lambda line: None)
            ours_runs.append(time.perf_counter() - start - check_s)  # the check runs inside run_training too
            direct_dir = tmp / f"direct{i}"
            direct_dir.mkdir()
            config = direct_dir / "train.yaml"
            config.write_text(yaml.safe_dump(llamafactory_yaml(cfg, tmp / "data", direct_dir)))
            start = time.perf_counter()
            subprocess.run([str(cli_path(cfg.venv)), "train", str(config)], check=True, capture_output=True, env=env)
            direct_runs.append(time.perf_counter() - start)
        ours, direct = min(ours_runs), min(direct_runs)
        overhead = (ours - direct) / direct
        rows.append(Row("sft_launcher", "overhead vs llamafactory-cli direct", overhead * 100, "%", ours / direct,
                        "our wall / direct wall", "< 2 %", overhead < 0.02))
        rows.append(Row("sft_launcher", "dataset check before training", check_s, "s", check_s / direct, "of one direct run", "report", True))
        rows += autocast_rows(cfg.venv, tmp)
    emit(rows)


def autocast_rows(venv: str, tmp: Path) -> list[Row]:
    """Seconds a CPU SFT step in fp32 and under bf16 autocast (alternated twice), and the largest relative gap
    between the two modes' losses at the same step."""
    from webdancer_models.cpu_linear import bf16_supported
    from webdancer_sft.config import SftConfig
    from webdancer_sft.export import export_sft
    from webdancer_sft.train import run_training

    if not bf16_supported():
        return [Row("sft_cpu_autocast", "not measured: no native bf16 matmuls here", 0, "-", 0, "-", "report", True)]
    export_sft(KEPT, tmp / "full")
    step_s: dict[str, list[float]] = {"off": [], "bf16": []}
    losses: dict[str, list[float]] = {}
    for i, mode in enumerate(["off", "bf16"] * 2):
        cfg = SftConfig(model_path=str(MODEL), venv=venv, max_steps=AUTOCAST_STEPS, save_steps=AUTOCAST_STEPS, per_device_train_batch_size=2,
                        cutoff_len=2048, learning_rate=3e-4, cpu_autocast=mode)
        out = tmp / f"autocast{i}-{mode}"
        losses.setdefault(mode, run_training(cfg, tmp / "full", out, echo=lambda line: None)["losses"])
        step_s[mode].append(json.loads((out / "all_results.json").read_text())["train_runtime"] / AUTOCAST_STEPS)
    fp32, bf16 = min(step_s["off"]), min(step_s["bf16"])
    gap = max(abs(b - f) / f for f, b in zip(losses["off"], losses["bf16"]))

    def spread(mode: str) -> str:
        return f"{min(step_s[mode]):.1f}-{max(step_s[mode]):.1f} s"

    shape = f"{AUTOCAST_STEPS} steps, batch 2, cutoff 2048"
    return [
        Row("sft_cpu_autocast", f"s a step, fp32 ({spread('off')}; {shape})", fp32, "s", 1.0, "the baseline", "report", True),
        Row("sft_cpu_autocast", f"s a step, bf16 autocast ({spread('bf16')})", bf16, "s", fp32 / bf16, "fp32 / bf16 autocast, same run", "report", True),
        Row("sft_cpu_autocast", "largest loss gap, bf16 vs fp32 at a step", gap * 100, "%", gap, "gap / the fp32 loss", "report", True),
    ]


if __name__ == "__main__":
    main()
