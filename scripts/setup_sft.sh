#!/usr/bin/env bash
# The SFT environment .venvs/sft: LLaMA-Factory 0.9.5 from its lock (scripts/locks/sft.txt), the same on a GPU node and
# on the CPU: torch 2.9.1 with the matching torchvision/torchaudio (LLaMA-Factory imports torchaudio unconditionally; on
# PyPI these are CUDA builds, which also run on a CPU) and DeepSpeed for configs/deepspeed. Its pins (transformers <= 5.6,
# datasets <= 4.0, ...) exclude verl's, so it lives beside .venv/, not in it. WEBDANCER_SFT_VENV puts it elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_pip.sh
PY=${PYTHON:-python3}
VENV=${WEBDANCER_SFT_VENV:-.venvs/sft}
LOCK=scripts/locks/sft.txt
stamp="$VENV/.webdancer-installed"
want="$(sha256sum "$LOCK" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install "$VENV/bin/python" --upgrade pip "setuptools>=77" wheel
# DeepSpeed ships only a source archive whose setup.py imports torch: built against the locked torch, after it.
pip_install "$VENV/bin/python" -r <(grep -v '^deepspeed==' "$LOCK")
pip_install "$VENV/bin/python" --no-build-isolation "$(grep '^deepspeed==' "$LOCK")"
echo "$want" > "$stamp"
