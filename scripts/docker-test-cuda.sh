#!/usr/bin/env bash
# Test llama-scorer:cuda as a user runs it on a host without a GPU (tests/docker/test_cuda_image.py): it says it
# found no GPU and serves on the CPU, with answers bit-identical to the host binary's (and to llama-scorer:cpu's
# where present) with the CPU variant pinned; `llama-scorer devices` inside it; the compose GPU override.
#
#   scripts/docker-test-cuda.sh          test the llama-scorer:cuda present (make cuda-image builds it; ~1 h cold
#                                        on 2 cores); without it, say so and exit 0
#   BUILD=1 scripts/docker-test-cuda.sh  build it first (scripts/cuda-image.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[docker-test-cuda] $*" >&2; }

CUDA_IMAGE=${CUDA_IMAGE:-llama-scorer:cuda}
PYTHON=${PYTHON:-.venv/bin/python}

docker info > /dev/null 2>&1 || { log "SKIPPED: no Docker engine answers (docker info failed)"; exit 0; }
if [ "${BUILD:-0}" = 1 ]; then IMAGE=$CUDA_IMAGE scripts/cuda-image.sh; fi
if ! docker image inspect "$CUDA_IMAGE" > /dev/null 2>&1; then
  log "SKIPPED: $CUDA_IMAGE is not present (build it with make cuda-image, or BUILD=1 $0)"
  exit 0
fi
log "$CUDA_IMAGE: $(docker image inspect -f '{{.Size}}' "$CUDA_IMAGE" | awk '{printf "%.2f GB", $1/1e9}')"
CUDA_IMAGE=$CUDA_IMAGE "$PYTHON" -m pytest -q -s -p no:cacheprovider tests/docker/test_cuda_image.py
