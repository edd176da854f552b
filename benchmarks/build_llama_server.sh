#!/usr/bin/env bash
# Build llama.cpp's `llama-server` and an F32 GGUF of the embedded tiny model, the reference that
# tiny_model_serving.py measures beside our servers when BENCH_LLAMA_SERVER and BENCH_GGUF are set.
# A benchmark reference only (webdancer does not ship or start it). The source is the llama.cpp that the
# llama-cpp-python sdist vendors (MIT; PyPI reaches these machines, GitHub does not); the build takes
# ~6 minutes on 2 cores (cmake, a C++ compiler). Prints the two variables to export.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=$(realpath -m "${OUT:-.cache/llama-server}")
VERSION=0.3.36
MODEL=.webdancer/models/smollm2-135m
[ -f "$MODEL/config.json" ] || { echo "export the model first: .venv/bin/webdancer model export smollm2-135m $MODEL" >&2; exit 1; }
command -v cmake >/dev/null && command -v c++ >/dev/null || { echo "needs cmake and a C++ compiler (Debian: cmake g++)" >&2; exit 1; }
mkdir -p "$OUT"
src="$OUT/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -d "$src" ]; then
  "$PY" -m pip download -q --no-deps --no-binary :all: -d "$OUT" "llama-cpp-python==$VERSION"
  tar -xzf "$OUT/llama_cpp_python-$VERSION.tar.gz" -C "$OUT"
fi
if [ ! -x "$OUT/build/bin/llama-server" ]; then
  cmake -S "$src" -B "$OUT/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF > "$OUT/cmake.log" 2>&1
  cmake --build "$OUT/build" --target llama-server -j "$(nproc)" > "$OUT/build.log" 2>&1
fi
if [ ! -f "$OUT/smollm2-135m-f32.gguf" ]; then
  # the converter reads a Llama tokenizer through sentencepiece first; it goes beside the build, not into .venv
  [ -d "$OUT/py" ] || "$PY" -m pip install -q --target "$OUT/py" sentencepiece
  PYTHONPATH="$src/gguf-py:$OUT/py" HF_HUB_OFFLINE=1 "$PY" "$src/convert_hf_to_gguf.py" "$MODEL" --outtype f32 \
    --outfile "$OUT/smollm2-135m-f32.gguf.tmp" > "$OUT/convert.log" 2>&1
  mv "$OUT/smollm2-135m-f32.gguf.tmp" "$OUT/smollm2-135m-f32.gguf"
fi
echo "export BENCH_LLAMA_SERVER=$OUT/build/bin/llama-server BENCH_GGUF=$OUT/smollm2-135m-f32.gguf"
