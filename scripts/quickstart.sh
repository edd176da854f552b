#!/usr/bin/env bash
# Set up the environments and run the main job on the embedded default, on the CPU, with no keys:
# `webdancer pipeline configs/quickstart.yaml` — build and serve the offline web, export and serve
# the tiny model, synthesize CrawlQA + E2HQA, sample (expert demonstrator + the tiny model), filter,
# evaluate the tiny model on held-out questions, fine-tune it with LLaMA-Factory, evaluate it again,
# run two GRPO/DAPO steps with TRL's GRPOTrainer (rl.engine=trl), evaluate once more, and write
# runs/quickstart/report.md (+ report.html). Rerunning resumes; extra key=value overrides pass on.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_disk.sh
[ -f runs/quickstart/report.md ] || need_disk $(( $(setup_gb .venv .venvs/sft) + 6 )) . "the quickstart (environments, tiny model, checkpoints under runs/quickstart)"
bash scripts/setup.sh
bash scripts/setup_sft.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/webdancer pipeline configs/quickstart.yaml "$@"
echo "report: runs/quickstart/report.md (and report.html)"
