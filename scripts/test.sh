#!/usr/bin/env bash
# Set up the environments and run the test suite: the core suite in .venv/ (tests/gpu_contract and the vLLM tests drive
# the other environments through their own tools), then the tests that need verl in its own environment .venvs/rl (tests/verl_side). Extra arguments go to both pytest runs.
# pytest's exit code 5 (no tests collected) is a failure here, never a silent pass.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/_disk.sh
tmp=$(dirname "$(mktemp -u)")
if [ "$(df -Pk . | awk 'NR == 2 { print $1 }')" = "$(df -Pk "$tmp" | awk 'NR == 2 { print $1 }')" ]; then
  need_disk $(( $(setup_gb) + 4 )) . "setting up and running the tests"  # 4 GiB: checkpoints the SFT/RL tests write
else
  need_disk "$(setup_gb)" . "setting up the environments"
  need_disk 4 "$tmp" "the tests (SFT and RL checkpoints under pytest's temporary folders)"
fi
bash scripts/setup.sh || { echo "setup failed" >&2; exit 1; }
bash scripts/setup_sft.sh || { echo "SFT environment setup failed" >&2; exit 1; }
bash scripts/setup_rl.sh || { echo "RL environment setup failed" >&2; exit 1; }
bash scripts/setup_serve.sh || { echo "serving environment setup failed" >&2; exit 1; }  # SGLang's parser, for the GPU recipes' checks
bash scripts/setup_vllm.sh || { echo "vLLM environment setup failed" >&2; exit 1; }  # serve.backend=vllm
bash scripts/setup_verifiers.sh || { echo "verifiers environment setup failed" >&2; exit 1; }  # vf-eval webdancer-verifiers
PYTHON=.venv/bin/python bash scripts/fetch_chat_templates.sh || { echo "fetching the published chat templates failed" >&2; exit 1; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
reports=$(mktemp -d)
.venv/bin/python -m pytest --junitxml="$reports/core.xml" "$@"
core=$?
.venvs/rl/bin/python -m pytest tests/verl_side --junitxml="$reports/verl.xml" "$@"
verl=$?
for rc in "$core" "$verl"; do
  if [ "$rc" -eq 5 ]; then echo "error: a pytest run collected no tests" >&2; exit 1; fi
done
# One closing line for both runs (scripts/test_total.py: a run that did not finish is named and counted as failed).
.venv/bin/python scripts/test_total.py "$reports" "core=$core" "verl=$verl"
[ "$core" -eq 0 ] && [ "$verl" -eq 0 ]
