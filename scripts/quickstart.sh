#!/usr/bin/env bash
# Set up .venv/ and run the main job on the embedded default, on the CPU, with no keys:
# build the offline web, export the tiny model, serve both on loopback, synthesize CrawlQA and
# E2HQA questions, sample expert trajectories and filter them, run the tiny model as the agent,
# fine-tune it on the kept trajectories with LLaMA-Factory, and run the fine-tuned model as the agent. Trajectories land in runs/quickstart/trajectories.jsonl (appended).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
WD=".venv/bin/webdancer"
CFG=configs/quickstart.yaml
RUN=runs/quickstart
mkdir -p "$RUN/logs"

[ -f .webdancer/web/manifest.json ] || $WD web build -c "$CFG"
$WD model export smollm2-135m .webdancer/models/smollm2-135m

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
$WD web serve -c "$CFG" > "$RUN/logs/web.log" 2>&1 &
pids+=($!)
$WD serve -c "$CFG" > "$RUN/logs/serve.log" 2>&1 &
pids+=($!)
echo "waiting for the model server (log: $RUN/logs/serve.log) ..."
for _ in $(seq 1 240); do
  curl -sf http://127.0.0.1:8000/health >/dev/null 2>&1 && curl -sf http://127.0.0.1:8765/ >/dev/null 2>&1 && break
  sleep 1
done

# Stage 1: synthesize browsing questions from the offline web (resumes; never rewrites what is there).
$WD synth crawlqa -c "$CFG"
$WD synth e2hqa -c "$CFG" --input "$RUN/qa_crawlqa.jsonl"
$WD synth stats "$RUN/qa_crawlqa.jsonl"
$WD synth stats "$RUN/qa_e2hqa.jsonl"

# Stage 2: sample trajectories with the offline expert demonstrator, then the three-stage filter.
$WD sample "$RUN/qa_crawlqa.jsonl" -c "$CFG" policy.name=expert --n 1
$WD filter "$RUN/trajectories_expert.jsonl" -c "$CFG" --out "$RUN/kept_expert.jsonl"

ask() {  # ask the quickstart questions of the model behind $1 (extra overrides follow)
  local out=$1; shift
  while IFS= read -r line; do
    question=$(printf '%s' "$line" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["question"])')
    echo
    echo "### $question"
    $WD run -c "$CFG" "$question" "$@" --out "$out" || true
  done < configs/quickstart_questions.jsonl
}
echo; echo "=== the untrained tiny model as the agent"
ask "$RUN/trajectories_base.jsonl"

# Stage 3: SFT of the tiny model on the kept expert trajectories with LLaMA-Factory (CPU, a few steps).
bash scripts/setup_sft.sh
$WD sft export "$RUN/kept_expert.jsonl" "$RUN/sft_data"
[ -f "$RUN/sft/trainer_state.json" ] || $WD sft train -c "$CFG"
$WD serve -c "$CFG" serve.model_path="$RUN/sft" serve.port=8001 > "$RUN/logs/serve_sft.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 240); do curl -sf http://127.0.0.1:8001/health >/dev/null 2>&1 && break; sleep 1; done
echo; echo "=== the tiny model after SFT as the agent"
ask "$RUN/trajectories_sft.jsonl" model.base_url=http://127.0.0.1:8001/v1 "model.model=$RUN/sft"
echo
echo "QA: $RUN/qa_*.jsonl  kept trajectories: $RUN/kept_expert.jsonl  SFT: $RUN/sft (loss in trainer_log.jsonl)"
echo "agent runs: $RUN/trajectories_base.jsonl (before SFT), $RUN/trajectories_sft.jsonl (after)"
