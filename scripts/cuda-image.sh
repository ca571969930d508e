#!/usr/bin/env bash
# Build llama-scorer:cuda from the unmodified docker/Dockerfile.cuda without a registry: its bases are local
# stand-ins made of Debian's CUDA 11.8 toolkit (scripts/docker-base-images.sh --cuda), passed as build arguments.
# A user who can pull nvidia/cuda runs the plain `docker build` of docker/Dockerfile.cuda's header instead.
#
#   scripts/cuda-image.sh                     bases (when absent), then llama-scorer:cuda for sm_90
#   CUDA_ARCHITECTURES="80;89;90" scripts/cuda-image.sh      other GPU generations (CUDA 11.8: up to sm_90)
#   DIST=target/cuda-dist scripts/cuda-image.sh              also copy the image's portable tree out (the binary,
#                                                            llama.cpp's libraries, libggml-cuda.so beside the
#                                                            CPU variants)
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
DEVEL=llama-scorer-base/cuda:11.8-devel-bookworm
RUNTIME=llama-scorer-base/cuda:11.8-runtime-bookworm
RUST_IMAGE=rust:$(rustc --version | awk '{print $2}' | cut -d. -f1,2)-bookworm
mkdir -p "$LOG_DIR"

docker info > /dev/null 2>&1 || { log "no Docker engine answers (docker info failed)"; exit 1; }
# shellcheck source=scripts/docker-lib.sh
source scripts/docker-lib.sh

scripts/docker-base-images.sh --cuda
log "docker build -f docker/Dockerfile.cuda -t $IMAGE (CUDA_ARCHITECTURES=$CUDA_ARCHITECTURES, FROM $DEVEL / $RUNTIME; log: $LOG_DIR/build.log)"
start=$(date +%s)
if ! docker_build --network host --progress plain \
  --build-arg BUILDER_IMAGE="$DEVEL" --build-arg RUNTIME_IMAGE="$RUNTIME" --build-arg RUST_IMAGE="$RUST_IMAGE" \
  --build-arg CUDA_ARCHITECTURES="$CUDA_ARCHITECTURES" --build-arg BUILD_JOBS="$BUILD_JOBS" \
  --build-arg BUILD_NICE="$BUILD_NICE" \
  -f docker/Dockerfile.cuda -t "$IMAGE" . > "$LOG_DIR/build.log" 2>&1; then
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
