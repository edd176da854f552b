#!/usr/bin/env bash
# The SFT environment .venvs/sft: LLaMA-Factory 0.9.5 on the CPU. Its pins (transformers <= 5.6,
# datasets <= 4.0, ...) exclude verl's, so it lives beside .venv/, not in it. torch 2.9.1 with the
# matching torchvision/torchaudio is the lightest stack that `llamafactory-cli train` runs on here
# (LLaMA-Factory imports torchaudio unconditionally; see ../shared/TRAINERS.md). On a GPU cluster,
# point sft.venv at an environment with LLaMA-Factory and CUDA torch instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_pip.sh
PY=${PYTHON:-python3}
VENV=.venvs/sft
stamp="$VENV/.webdancer-installed"
want="llamafactory==0.9.5 torch==2.9.1"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install "$VENV/bin/python" --upgrade pip
pip_install "$VENV/bin/python" torch==2.9.1 torchvision==0.24.1 "torchaudio==2.9.*"
pip_install "$VENV/bin/python" "llamafactory==0.9.5"
echo "$want" > "$stamp"
