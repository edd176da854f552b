#!/usr/bin/env bash
# Serve a model folder with SGLang on a GPU host, as the reference release's deploy script does.
# Usage: bash scripts/deploy_model.sh MODEL_PATH [TP=1] [PORT=8004]
# Env: SERVED_NAME (default: folder name), CONTEXT_LENGTH (32768), MEM_FRACTION (0.85).
set -euo pipefail
MODEL_PATH=${1:?usage: deploy_model.sh MODEL_PATH [TP] [PORT]}
TP=${2:-1}
PORT=${3:-8004}
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec "$PY" -m webdancer.cli serve \
  serve.backend=sglang "serve.model_path=$MODEL_PATH" "serve.tensor_parallel=$TP" "serve.port=$PORT" \
  "serve.host=${HOST:-0.0.0.0}" "serve.served_model_name=${SERVED_NAME:-$(basename "$MODEL_PATH")}" \
  "serve.context_length=${CONTEXT_LENGTH:-32768}" "serve.mem_fraction_static=${MEM_FRACTION:-0.85}"
