"""SFT adapter costs: export records/s (vs json.dumps of the same records, the floor), and the launcher's
overhead vs running `llamafactory-cli train` directly on the same YAML (target < 2 %).

The launcher also builds the dataset once with LLaMA-Factory's loader before training (it refuses
to train when examples would be skipped); that check is reported on its own line.
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
    emit(rows)


if __name__ == "__main__":
    main()
