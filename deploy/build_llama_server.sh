#!/usr/bin/env bash
# Build llama.cpp's llama-server (and llama-quantize) once, from the llama.cpp sources vendored
# in the llama-cpp-python sdist on PyPI, into a cache outside the clone; reused when present.
# Prints the path of the llama-server binary. First run: a ~75 MB download and a few minutes
# of compiling on 2 cores (README "Model server"); later runs: nothing.
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${LLAMA_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chatbot/llama.cpp-$VERSION}"
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-2}"
BIN="$CACHE/bin/llama-server"

if [ -x "$BIN" ] && [ -x "$CACHE/bin/llama-quantize" ]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # two `make test` runs at once build it once
if [ -x "$BIN" ] && [ -x "$CACHE/bin/llama-quantize" ]; then
  echo "$BIN"
  exit 0
fi

start=$(date +%s)
work="$CACHE/src"
rm -rf "$work" && mkdir -p "$work"
echo "Building llama-server $VERSION into $CACHE (once; a few minutes)" >&2
"$PYTHON" -m pip download --quiet --no-binary :all: --no-deps --dest "$work" \
  "llama-cpp-python==$VERSION" >&2
tar -xzf "$work"/llama_cpp_python-"$VERSION".tar.gz -C "$work"
src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"

# The UI would be fetched from the network: off. Native CPU flags: the cache is per machine.
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE="${GGML_NATIVE:-ON}" \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
cmake --build "$work/build" --config Release -j "$JOBS" --target llama-server llama-quantize >&2

mkdir -p "$CACHE/bin" "$CACHE/python"
cp "$work/build/bin/llama-quantize" "$CACHE/bin/"
# The converters (HF checkpoint / LoRA adapter -> GGUF) and the gguf-py they were written with.
cp -r "$src/convert_hf_to_gguf.py" "$src/convert_lora_to_gguf.py" "$src/conversion" "$src/gguf-py" \
  "$CACHE/python/"
cp "$work/build/bin/llama-server" "$CACHE/bin/"  # last: its presence marks the cache complete
rm -rf "$work"
echo "llama-server $VERSION built in $(( $(date +%s) - start )) s" >&2
echo "$BIN"
