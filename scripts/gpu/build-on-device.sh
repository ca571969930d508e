#!/usr/bin/env bash
# On the GPU host (CUDA toolkit, CMake, Python with numpy; no Rust, no network needed): build llama.cpp's
# shared libraries and its CUDA backend from the source carried in the kit (the exact source the Rust
# bindings were generated from, so the ABI matches), and optionally write a synthetic Llama-3-8B-shaped
# Q4_K model. Vendored from the project's GPU recipe (verified on an H200: docs/gpu-box.md).
#
# Usage: bash KIT/build-on-device.sh KIT [--model /tmp/m8b.gguf [SHAPE]]
#   SHAPE: 8b (default) or tiny. Environment: LLAMA_BUILD_DIR (default /tmp/llama-build),
#   CUDA_ARCHITECTURES (default 90: H100/H200; e.g. "80;86;89;90" for several cards).
# About 4.5 minutes on 16 cores; the 8b model ~25 s, in parallel. Prints LIBS=<folder>: use it as
# LD_LIBRARY_PATH and as llama-scorer's --backends-dir.
set -euo pipefail
K=$1; shift
B=${LLAMA_BUILD_DIR:-/tmp/llama-build}
archs=${CUDA_ARCHITECTURES:-90}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
GEN=""
if [ "${1:-}" = "--model" ] && [ ! -f "$2" ]; then
  wheel=$(find "$K/whl" -name 'gguf-*.whl' | head -1)
  ( PYTHONPATH="$wheel" python3 "$K/gen_model.py" "$2" "${3:-8b}" > /tmp/gen.log 2>&1 ) & GEN=$!
fi
if [ ! -f "$B/bin/libggml-cuda.so" ]; then
  cmake -S "$K/llama.cpp" -B "$B" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DGGML_BACKEND_DL=ON \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_CCACHE=OFF -DBUILD_SHARED_LIBS=ON \
    "-DCMAKE_CUDA_ARCHITECTURES=$archs" -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_COMMON=OFF -DGGML_OPENMP=OFF \
    > /tmp/llama-cmake.log 2>&1 || { tail -30 /tmp/llama-cmake.log; exit 1; }
  cmake --build "$B" -j "$(nproc)" > /tmp/llama-build.log 2>&1 || { grep -m5 -i error /tmp/llama-build.log; exit 1; }
fi
if [ -n "$GEN" ]; then
  wait "$GEN" || { cat /tmp/gen.log; exit 1; }
fi
echo "LIBS=$B/bin"
