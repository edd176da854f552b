#!/usr/bin/env bash
# The published chat templates of the GPU recipes' model families (Qwen2.5-Instruct, QwQ-32B, Qwen3),
# for the tests that check SFT, RL and inference render one text (tests/test_chat_templates.py). They
# are taken from a PyPI package that ships them (llama.cpp's test copies of the Hugging Face
# tokenizer_config.json templates, vendored in the llama-cpp-python sdist) into .cache/chat_templates/.
# Idempotent: does nothing when the files are there.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.cache/chat_templates
NAMES=(Qwen-Qwen2.5-7B-Instruct Qwen-QwQ-32B Qwen-Qwen3-0.6B)
have=1
for n in "${NAMES[@]}"; do [ -s "$OUT/$n.jinja" ] || have=0; done
[ "$have" = 1 ] && exit 0
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q --no-deps --no-binary :all: -d "$tmp" "llama-cpp-python==0.3.36" > "$tmp/pip.log" 2>&1 \
  || { cat "$tmp/pip.log" >&2; echo "could not download llama-cpp-python's sdist for the chat templates" >&2; exit 1; }
mkdir -p "$OUT"
for n in "${NAMES[@]}"; do
  tar -xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -O "llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates/$n.jinja" > "$OUT/$n.jinja.tmp"
  mv "$OUT/$n.jinja.tmp" "$OUT/$n.jinja"
done
