#!/usr/bin/env bash
# The verifiers environment .venvs/verifiers: verifiers 0.4.0 (Prime Intellect's environments library, what prime-rl
# trains on) with webdancer and its offline web, for `vf-eval webdancer-verifiers` (plugins/webdancer_verifiers).
# Its own environment because verifiers pins mcp==2.0.0 and our MCP plugin is written against mcp 1.x (.venv).
# No torch: the environment runs tools and rewards; the model is served elsewhere (`webdancer serve`). ~0.7 GB.
# verifiers' harness program is a uv script: uv comes from here, and its first run fetches the program's few
# packages (openai, mcp, httpx) into uv's cache from the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_pip.sh
PY=${PYTHON:-python3}
VENV=${WEBDANCER_VERIFIERS_VENV:-.venvs/verifiers}
want="verifiers==0.4.0 $(cat pyproject.toml scripts/setup_verifiers.sh | sha256sum | cut -d" " -f1)"
venv_is_current "$VENV" "$want" && exit 0
make_venv "$VENV" "$PY"
pip_install "$VENV/bin/python" "verifiers==0.4.0" "uv>=0.9" -e ".[web]"
echo "$want" > "$VENV/.webdancer-installed"
