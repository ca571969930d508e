#!/usr/bin/env bash
# Build llama-scorer:cuda from the unmodified docker/Dockerfile.cuda without a registry: its bases are local
# stand-ins made of Debian's CUDA 11.8 toolkit (scripts/docker-base-images.sh --cuda), passed as build arguments.
# A user who can pull nvidia/cuda runs the plain `docker build` of docker/Dockerfile.cuda's header instead.
#
#   scripts/cuda-image.sh                     bases (when absent), then llama-scorer:cuda for CUDA_ARCHITECTURES=90
#                                             (H100/H200). CUDA 11.8 lacks two device functions of Hopper's
#                                             programmatic dependent launch that the vendored llama.cpp calls in
#                                             sm_90 code; scripts/docker-build.sh pre-includes them from
#                                             docker/cuda-11-pdl.h (the PTX instructions CUDA 12 defines them as)
#   CUDA_ARCHITECTURES="80;86;89;90" scripts/cuda-image.sh   more GPU generations (one nvcc pass each; 89: L4, RTX 40)
#   DIST=target/cuda-dist scripts/cuda-image.sh              also copy the image's portable tree out (the binary,
#                                                            llama.cpp's libraries, libggml-cuda.so beside the
#                                                            CPU variants)
#   scripts/cuda-image.sh --check             what CI runs instead (seconds, no Docker): every build argument this
#                                             script passes is an ARG of docker/Dockerfile.cuda, hadolint accepts
#                                             it, and, where nvcc is installed, llama.cpp's CUDA build configures
#
# Env: IMAGE (llama-scorer:cuda), BUILD_JOBS (parallel jobs, default one per CPU), BUILD_NICE (niceness of the
# compile, default 10), LOG_DIR (target/cuda-image). Prints the build time; a second run reuses the cache mounts.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[cuda-image] $*" >&2; }

IMAGE=${IMAGE:-llama-scorer:cuda}
CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES:-90}
BUILD_JOBS=${BUILD_JOBS:-}
BUILD_NICE=${BUILD_NICE:-10}
LOG_DIR=${LOG_DIR:-target/cuda-image}
read -r DEVEL RUNTIME < <(scripts/docker-base-images.sh --print-cuda-bases)
mkdir -p "$LOG_DIR"

# The arguments of the docker build below; --check holds docker/Dockerfile.cuda to them.
build_args() {
  printf '%s\n' \
    "BUILDER_IMAGE=$DEVEL" "RUNTIME_IMAGE=$RUNTIME" \
    "RUST_IMAGE=rust:$(rustc --version | awk '{print $2}' | cut -d. -f1,2)-bookworm" \
    "CUDA_ARCHITECTURES=$CUDA_ARCHITECTURES" "BUILD_JOBS=$BUILD_JOBS" "BUILD_NICE=$BUILD_NICE"
}

check() {
  local arg name failed=0
  while read -r arg; do
    name=${arg%%=*}
    if grep -q "^ARG $name\b" docker/Dockerfile.cuda; then log "ARG $name: declared"
    else log "docker/Dockerfile.cuda declares no ARG $name: the stand-in build would ignore it"; failed=1; fi
  done < <(build_args)
  if [ -x "${HADOLINT:-.lint/venv/bin/hadolint}" ]; then
    "${HADOLINT:-.lint/venv/bin/hadolint}" docker/Dockerfile.cuda && log "hadolint: clean"
  else
    log "hadolint not installed here (make lint-docker installs it): skipped"
  fi
  if command -v nvcc > /dev/null 2>&1; then
    local src build
    src=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name "llama-cpp-sys-2-$(sed -n 's/.*llama-cpp-sys-2 = { version = "=\([0-9.]*\)".*/\1/p' Cargo.toml)" | head -1)
    build=$LOG_DIR/cmake-configure
    rm -rf "$build"
    if cmake -S "$src/llama.cpp" -B "$build" -DGGML_CUDA=ON -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON \
      -DBUILD_SHARED_LIBS=ON -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHITECTURES" -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF > "$LOG_DIR/cmake-configure.log" 2>&1; then
      log "llama.cpp's CUDA build configures with $(nvcc --version | tail -1)"
    else
      tail -20 "$LOG_DIR/cmake-configure.log" >&2; log "llama.cpp's CUDA build does not configure"; failed=1
    fi
  else
    log "no nvcc here: the CMake configure of the CUDA build is skipped (scripts/cuda-image.sh builds it in Docker)"
  fi
  return "$failed"
}
if [ "${1:-}" = "--check" ]; then
  check
  exit
fi

docker info > /dev/null 2>&1 || { log "no Docker engine answers (docker info failed)"; exit 1; }
# shellcheck source=scripts/docker-lib.sh
source scripts/docker-lib.sh

scripts/docker-base-images.sh --cuda
log "docker build -f docker/Dockerfile.cuda -t $IMAGE (CUDA_ARCHITECTURES=$CUDA_ARCHITECTURES, FROM $DEVEL / $RUNTIME; log: $LOG_DIR/build.log)"
start=$(date +%s)
args=()
while read -r arg; do args+=(--build-arg "$arg"); done < <(build_args)
if ! docker_build --network host --progress plain "${args[@]}" -f docker/Dockerfile.cuda -t "$IMAGE" . > "$LOG_DIR/build.log" 2>&1; then
  tail -40 "$LOG_DIR/build.log" >&2
  log "docker build failed"
  exit 1
fi
seconds=$(($(date +%s) - start))
log "built $IMAGE in $seconds s: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}')"
echo "$seconds" > "$LOG_DIR/build-seconds"

if [ -n "${DIST:-}" ]; then
  rm -rf "$DIST" && mkdir -p "$DIST"
  container=$(docker create "$IMAGE")
  docker cp "$container:/opt/llama-scorer/." "$DIST/"
  docker rm "$container" > /dev/null
  log "portable tree in $DIST: $(find "$DIST" -maxdepth 1 -type f -printf '%f ')"
fi
docker run --rm "$IMAGE" --version
