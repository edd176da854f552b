#!/usr/bin/env bash
# The serving environment .venvs/serve: SGLang 0.5.14, for serve.backend=sglang (`webdancer serve`, sampling and eval
# against it). On a GPU node, WEBDANCER_SERVE_GPU=1 installs it from its lock (scripts/locks/serve-sglang.txt).
# On the CPU, SGLang cannot serve; what the tests and `webdancer serve --check` need there is SGLang's own command-line
# parser, which imports SGLang's server modules, and through them torch, torchvision and triton. PyPI has no CPU
# torchvision that loads beside the CPU torch here, and the CUDA stack is ~6 GB to download; the SFT environment
# already holds a torch 2.9.1 stack that imports on a CPU (its CUDA build), so on the CPU this environment holds SGLang
# (without its dependencies) and the few pure-Python modules its server modules import, at the lock's versions, and
# reads torch, transformers and the rest from .venvs/sft, placed after its own packages on sys.path (~0.3 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_pip.sh
PY=${PYTHON:-python3}
VENV=${WEBDANCER_SERVE_VENV:-.venvs/serve}
GPU=${WEBDANCER_SERVE_GPU:-0}
LOCK=scripts/locks/serve-sglang.txt
SFT=${WEBDANCER_SFT_VENV:-.venvs/sft}
want="gpu=$GPU $(cat "$LOCK" scripts/setup_serve.sh | sha256sum | cut -d" " -f1)"
venv_is_current "$VENV" "$want" && exit 0
make_venv "$VENV" "$PY"
if [ "$GPU" = "1" ]; then
  pip_install "$VENV/bin/python" -r "$LOCK"
else
  [ -x "$SFT/bin/python" ] || { echo "error: $SFT is missing: run bash scripts/setup_sft.sh first" >&2; exit 1; }
  pin() { grep -i "^$1==" "$LOCK"; }
  pip_install "$VENV/bin/python" --no-deps "$(pin sglang)"
  pip_install "$VENV/bin/python" "$(pin openai)" "$(pin partial-json-parser)" "$(pin pybase64)" "$(pin orjson)" "$(pin pyzmq)" \
    "$(pin ipython)" "$(pin sniffio)" "$(pin distro)"
  site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  sft_site=$("$SFT/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$(cd "$sft_site" && pwd)" > "$site/zz_webdancer_sft_stack.pth"  # read last: this environment's own packages win
fi
echo "$want" > "$VENV/.webdancer-installed"
