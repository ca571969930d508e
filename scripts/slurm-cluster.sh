#!/usr/bin/env bash
# A SLURM cluster of containers on this Docker engine: a controller (slurmctld) and three compute nodes
# (slurmd, one counted GPU each) from Debian's slurm-wlm 22.05 and munge, on a private network, with a munge
# key made for each run. Every container mounts the same folders:
#
#   /usr/local/bin/llama-scorer   this checkout's release binary ($BINARY)       read-only
#   /models                       the test models ($MODELS)                       read-only
#   /opt/llama-scorer/slurm       deploy/slurm (the job scripts a user copies)    read-only
#   /shared                       the cluster's shared file system ($RUN_DIR/shared), as NFS would be
#
#   scripts/slurm-cluster.sh up        build the image (base images first, when absent), start the cluster,
#                                      wait until the three nodes are idle
#   scripts/slurm-cluster.sh down      remove the containers and the network (the run folder stays)
#   scripts/slurm-cluster.sh status    the containers, sinfo and squeue
#   scripts/slurm-cluster.sh exec CMD  run CMD on the controller, in /shared (e.g. exec sinfo)
#
# Names: containers $CLUSTER-slurmctld and $CLUSTER-node1..3, network $CLUSTER-net (CLUSTER default
# llama-scorer-slurm); the run folder is $RUN_DIR (default target/slurm/cluster).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[slurm-cluster] $*" >&2; }

CLUSTER=${CLUSTER:-llama-scorer-slurm}
IMAGE=${SLURM_IMAGE:-llama-scorer-slurm:22.05}
RUN_DIR=$(realpath -m "${RUN_DIR:-target/slurm/cluster}")
BINARY=$(realpath -m "${BINARY:-target/release/llama-scorer}")
MODELS=$(realpath -m "${MODELS:-models}")
NODES=(node1 node2 node3)
UP_TIMEOUT=${UP_TIMEOUT:-90}

# The controller's shell: run a command there, in the shared folder.
on_controller() { docker exec -w /shared "$CLUSTER-slurmctld" "$@"; }

# Built every time: Docker's layer cache makes a rebuild of an unchanged docker/slurm take a second.
build_image() {
  docker image inspect debian:bookworm-slim > /dev/null 2>&1 || scripts/docker-base-images.sh
  log "docker build $IMAGE from docker/slurm (log: $RUN_DIR/build.log)"
  mkdir -p "$RUN_DIR"
  if ! docker build --network host -t "$IMAGE" docker/slurm > "$RUN_DIR/build.log" 2>&1; then
    tail -20 "$RUN_DIR/build.log" >&2
    log "docker build failed"
    exit 1
  fi
}

# The run folder: slurm.conf and gres.conf, a new munge key, an empty shared folder.
prepare_run_dir() {
  mkdir -p "$RUN_DIR/etc" "$RUN_DIR/shared"
  sed "s/@CPUS@/$(nproc)/" docker/slurm/slurm.conf.in > "$RUN_DIR/etc/slurm.conf"
  cp docker/slurm/gres.conf "$RUN_DIR/etc/gres.conf"
  rm -f "$RUN_DIR/munge.key"
  head -c 1024 /dev/urandom > "$RUN_DIR/munge.key"
  chmod 0444 "$RUN_DIR/munge.key" # copied to munge's own 0400 file by each container
}

start() {
  local host=$1 role=$2
  docker run -d --name "$CLUSTER-$host" --hostname "$host" --network "$CLUSTER-net" --network-alias "$host" \
    -v "$RUN_DIR/etc:/etc/slurm:ro" -v "$RUN_DIR/munge.key:/run/secrets/munge.key:ro" \
    -v "$BINARY:/usr/local/bin/llama-scorer:ro" -v "$MODELS:/models:ro" \
    -v "$PWD/deploy/slurm:/opt/llama-scorer/slurm:ro" -v "$RUN_DIR/shared:/shared" \
    --label "llama-scorer-slurm=$CLUSTER" "$IMAGE" "$role" > /dev/null
}

up() {
  [ -x "$BINARY" ] || { log "no binary at $BINARY (cargo build --release --locked)"; exit 1; }
  [ -d "$MODELS" ] || { log "no models folder at $MODELS (make models)"; exit 1; }
  down 2> /dev/null || true
  build_image
  prepare_run_dir
  docker network create "$CLUSTER-net" > /dev/null
  start slurmctld controller
  for node in "${NODES[@]}"; do start "$node" compute; done
  local deadline=$((SECONDS + UP_TIMEOUT)) idle=0
  while [ "$SECONDS" -lt "$deadline" ]; do
    idle=$(on_controller sinfo -h -N -t idle -o %N 2> /dev/null | sort -u | wc -l) || idle=0
    [ "$idle" -ge "${#NODES[@]}" ] && break
    sleep 1
  done
  if [ "$idle" -lt "${#NODES[@]}" ]; then
    log "only $idle of ${#NODES[@]} nodes idle after ${UP_TIMEOUT}s"
    status >&2 || true
    for c in slurmctld "${NODES[@]}"; do docker logs --tail 15 "$CLUSTER-$c" >&2 2>&1 || true; done
    exit 1
  fi
  log "up: $CLUSTER-slurmctld + ${#NODES[@]} nodes idle; shared folder $RUN_DIR/shared"
}

down() {
  local c
  for c in slurmctld "${NODES[@]}"; do docker rm -f "$CLUSTER-$c" > /dev/null 2>&1 || true; done
  docker network rm "$CLUSTER-net" > /dev/null 2>&1 || true
}

status() {
  docker ps -a --filter "label=llama-scorer-slurm=$CLUSTER" --format '{{.Names}}\t{{.Status}}'
  on_controller sinfo -N -o '%N %T %G %C' && on_controller squeue -o '%i %j %T %N %r'
}

case "${1:-}" in
  up) up ;;
  down) down; log "down" ;;
  status) status ;;
  exec)
    shift
    on_controller "$@"
    ;;
  *)
    sed -n '2,19p' "$0"
    exit 2
    ;;
esac
