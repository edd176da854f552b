#!/usr/bin/env bash
# Start the gradio demo. With the reference release's keys in the environment it uses the real web
# (GOOGLE_SEARCH_KEY or SERPER_API_KEY: Serper search; JINA_API_KEY: Jina reader; DASHSCOPE_API_KEY:
# Qwen2.5-72B summaries of visited pages) and the model at $MODEL_URL ($MODEL_NAME); without them,
# the embedded default: the offline web and the tiny model, both served here on loopback.
#   bash scripts/run_demo.sh                     # embedded default: the newest model runs/quickstart trained
#   MODEL_URL=http://gpu-host:8004/v1 MODEL_NAME=WebDancer-32B GOOGLE_SEARCH_KEY=... JINA_API_KEY=... bash scripts/run_demo.sh
# Extra key=value overrides are passed on, e.g. `bash scripts/run_demo.sh demo.port=7861`.
set -euo pipefail
cd "$(dirname "$0")/.."
WEBDANCER_EXTRAS=${WEBDANCER_EXTRAS:-test} bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
WD=.venv/bin/webdancer
CFG=configs/default.yaml
args=()
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
mkdir -p runs/demo

if [ -n "${GOOGLE_SEARCH_KEY:-}${SERPER_API_KEY:-}" ]; then
  args+=(tools.search.backend=serper)
else
  [ -f .webdancer/web/manifest.json ] || $WD web build -c "$CFG"
  $WD web serve -c "$CFG" > runs/demo/web.log 2>&1 &
  pids+=($!)
fi
if [ -n "${JINA_API_KEY:-}" ]; then
  args+=(tools.visit.reader=jina)
fi
if [ -n "${DASHSCOPE_API_KEY:-}" ]; then
  args+=("tools.visit.summary_model={base_url: 'https://dashscope.aliyuncs.com/compatible-mode/v1', model: qwen2.5-72b-instruct, api_key_env: DASHSCOPE_API_KEY, max_tokens: 2048}")
fi
if [ -n "${MODEL_URL:-}" ]; then
  args+=("model.base_url=$MODEL_URL" "model.model=${MODEL_NAME:?set MODEL_NAME to the served model name}" agent.max_turns=20 agent.max_context_tokens=32000 model.max_tokens=4096)
else
  # The newest model the quickstart trained (after RL, else after SFT), else the base model; the page says which.
  $WD model export smollm2-135m .webdancer/models/smollm2-135m
  args+=(demo.model_run="${MODEL_RUN:-runs/quickstart}" demo.serve_model=true run.name=demo)
fi
$WD demo -c "$CFG" "${args[@]}" "$@"
