#!/usr/bin/env bash
# Build the CPU image from the unmodified docker/Dockerfile and test it as a user runs it (tests/docker).
#
#   scripts/docker-test.sh              base images (local stand-ins when absent), build llama-scorer:cpu, test
#   BUILD_ARGS="--build-arg FEATURES=" scripts/docker-test.sh     the same with build arguments
#   SKIP_BUILD=1 scripts/docker-test.sh                         test the llama-scorer:cpu already present
#
# The build uses BuildKit (the Dockerfile's cache mounts keep cargo's registry and target between builds):
# `docker buildx` where installed, else a Docker client with BuildKit built in (20.10, Debian's docker.io).
# It runs with --network host: crates.io and Debian's mirror are reached as from the host.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[docker-test] $*" >&2; }

IMAGE=${IMAGE:-llama-scorer:cpu}
PYTHON=${PYTHON:-.venv/bin/python}
LOG_DIR=${LOG_DIR:-target/docker-test}
mkdir -p "$LOG_DIR"

docker info > /dev/null 2>&1 || { log "no Docker engine answers (docker info failed)"; exit 1; }

# shellcheck source=scripts/docker-lib.sh
source scripts/docker-lib.sh

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  scripts/docker-base-images.sh
  log "docker build -f docker/Dockerfile -t $IMAGE ${BUILD_ARGS:-} . (log: $LOG_DIR/build.log)"
  start=$(date +%s)
  # shellcheck disable=SC2086 # BUILD_ARGS is a list of arguments
  if ! docker_build --network host --progress plain ${BUILD_ARGS:-} -f docker/Dockerfile -t "$IMAGE" . \
    > "$LOG_DIR/build.log" 2>&1; then
    tail -40 "$LOG_DIR/build.log" >&2
    log "docker build failed"
    exit 1
  fi
  log "built $IMAGE in $(($(date +%s) - start)) s"
fi
docker image inspect "$IMAGE" > /dev/null 2>&1 || { log "$IMAGE not present"; exit 1; }
log "$IMAGE: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.1f MB", $1/1e6}')"

IMAGE=$IMAGE "$PYTHON" -m pytest -q -s -p no:cacheprovider tests/docker
