#!/usr/bin/env bash
# Prepare the folder scripts/gpu-check.sh needs on a CUDA host (which has no Rust and no network):
# llama.cpp's source as vendored by the llama-cpp-sys-2 version in Cargo.lock, the gguf wheel and the model
# generator (scripts/gpu/prepare-kit.sh), and llama-scorer built here with --features dynamic-backends, which
# links libllama/libggml dynamically and loads backends from a folder: the GPU host supplies those, built
# with CUDA from the same source.
# Usage: scripts/prepare-gpu-kit.sh [KIT]   (KIT defaults to .gpu-kit, git-ignored)
# Environment: CARGO_TARGET_DIR (default target-dyn; a cold build there takes 20–30 minutes on 2 cores).
# Then, on the GPU host, from the repo root with KIT carried: bash scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
kit=${1:-.gpu-kit}
target=${CARGO_TARGET_DIR:-target-dyn}
CARGO_TARGET_DIR=$target cargo build --release --locked --features dynamic-backends
bin=$target/release/llama-scorer
readelf -d "$bin" | grep -q 'NEEDED.*libllama' \
  || { echo "$bin does not link libllama dynamically: was it built with --features dynamic-backends?"; exit 1; }
scripts/gpu/prepare-kit.sh "$kit"
mkdir -p "$kit/bin"
cp "$bin" "$kit/bin/llama-scorer"
strip --strip-debug "$kit/bin/llama-scorer"
size=$(du -sm "$kit" | cut -f1)
# Kept under 60 MiB so that the kit is cheap to copy to the GPU host with the working tree.
echo "kit ready in $kit (${size} MiB)"
[ "$size" -lt 60 ] || { echo "kit too large to carry"; exit 1; }
