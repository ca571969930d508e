#!/usr/bin/env bash
# Prepare a folder to carry to a GPU host: llama.cpp's source exactly as vendored by the llama-cpp-sys-2
# version in Cargo.lock (so the libraries built there match the Rust bindings), trimmed of backends nobody
# builds there, plus the model generator, build-on-device.sh and the gguf wheel.
# Vendored from the project's GPU recipe (docs/gpu-box.md). Usage (from the repo root): scripts/gpu/prepare-kit.sh .gpu-kit
# scripts/prepare-gpu-kit.sh wraps it and adds the release binary.
set -euo pipefail
dest=${1:-.gpu-kit}
here=$(cd "$(dirname "$0")" && pwd)
ver=$(cargo metadata --locked --format-version 1 2>/dev/null | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="llama-cpp-sys-2"))')
src=$(find "${CARGO_HOME:-$HOME/.cargo}"/registry/src -maxdepth 3 -path "*/llama-cpp-sys-2-$ver/llama.cpp" -type d | head -1)
[ -d "${src:-/nonexistent}" ] || { echo "llama-cpp-sys-2 $ver source not found; run cargo build first"; exit 1; }
rm -rf "$dest" && mkdir -p "$dest/llama.cpp" "$dest/whl"
cp -r "$src"/{CMakeLists.txt,cmake,include,src,vendor,ggml} "$dest/llama.cpp/"
# backends nobody builds there: keep the copied tree small (prepare-gpu-kit.sh refuses a kit of 60 MiB or more)
for b in sycl vulkan metal opencl cann musa kompute hip rpc webgpu zdnn openvino hexagon zendnn virtgpu et; do
  rm -rf "$dest/llama.cpp/ggml/src/ggml-$b"; done
cp "$here/gen_model.py" "$here/build-on-device.sh" "$dest/"
python3 -m pip download -q --no-deps -d "$dest/whl" gguf==0.19.0
echo "kit for llama-cpp-sys-2 $ver in $dest ($(du -sh "$dest" | cut -f1))"
