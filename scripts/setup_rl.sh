#!/usr/bin/env bash
# The RL environment .venvs/rl: verl 0.9.1 with webdancer installed beside it, so verl's tool,
# agent-loop and reward hooks can import webdancer's plugins. verl's pins exclude LLaMA-Factory's
# (../shared/TRAINERS.md), so it is its own environment. On the CPU: the local CPU torch and bare
# verl (everything but rollouts and training steps runs). On a GPU machine set WEBDANCER_RL_GPU=1:
# verl[sglang] as verl pins it (torch 2.11, transformers 5.9, sglang 0.5.12).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${WEBDANCER_RL_VENV:-.venvs/rl}
GPU=${WEBDANCER_RL_GPU:-0}
stamp="$VENV/.webdancer-installed"
want="verl==0.9.1 gpu=$GPU $(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip "setuptools>=70" wheel
if [ "$GPU" = "1" ]; then
  "$VENV/bin/python" -m pip install -q "verl[sglang]==0.9.1"
else
  # CPU torch first (a local wheel here); a bare requirement would pull a CUDA build.
  "$VENV/bin/python" -m pip install -q "torch==${WEBDANCER_TORCH:-2.13.0}"
  "$VENV/bin/python" -m pip install -q "verl==0.9.1"
fi
# verl imports these but does not declare them (seen with 0.9.1).
"$VENV/bin/python" -m pip install -q cachetools uvicorn fastapi
"$VENV/bin/python" -m pip install -q -e ".[web]"
echo "$want" > "$stamp"
