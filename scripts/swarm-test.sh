#!/usr/bin/env bash
# Three llama-scorer replicas on Docker Swarm behind HAProxy (deploy/swarm/stack.yaml), checked for real:
#   1. the stack comes up: 3 healthy replica tasks, the balancer answering
#   2. prompt affinity: each X-Llama-Scorer-Affinity value always reaches the same replica, and the values
#      spread over all three; a real score through the balancer
#   3. health-driven restart: a replica whose health check fails (port 8080 dropped inside its network
#      namespace; the process keeps running) is killed and replaced by Swarm
#   4. rolling update under traffic (start-first, one at a time): requests keep succeeding
# then removes the stack, and leaves the swarm if this script created it. Needs llama-scorer:cpu (docker
# build -f docker/Dockerfile -t llama-scorer:cpu .) and the test models (make models).
#
#   scripts/swarm-test.sh                   # PORT=18080 STACK=llama-scorer-test PUBLISH_MODE=ingress|host
#
# PUBLISH_MODE=ingress uses Swarm's routing mesh, which needs IPVS in the kernel; the script falls back to
# host mode (the port bound on this node only) when the routing mesh does not answer.
set -euo pipefail

cd "$(dirname "$0")/.."
PORT=${PORT:-18080}
STACK=${STACK:-llama-scorer-test}
PUBLISH_MODE=${PUBLISH_MODE:-ingress}
MODELS_DIR=$(readlink -f "${MODELS_DIR:-models}")
SERVICE="${STACK}_llama-scorer"
URL="http://127.0.0.1:${PORT}"
STARTED_SWARM=0
HAD_GWBRIDGE=0
LOAD_PID=""

log() { printf '[swarm-test %s] %s\n' "$(date +%T)" "$*"; }
fail() { log "FAIL: $*"; exit 1; }

cleanup() {
    local rc=$?
    if [[ -n "$LOAD_PID" ]]; then kill "$LOAD_PID" 2>/dev/null || true; fi
    log "tearing down (exit status $rc)"
    docker stack rm "$STACK" >/dev/null 2>&1 || true
    # Wait for the stack's containers and network to go before leaving the swarm.
    for _ in $(seq 1 60); do
        if [[ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ]] &&
            ! docker network inspect "${STACK}_scoring" >/dev/null 2>&1; then
            break
        fi
        sleep 1
    done
    if [[ "$STARTED_SWARM" == 1 ]]; then
        docker swarm leave --force >/dev/null 2>&1 || true
        log "left the swarm"
        # swarm init creates the docker_gwbridge network; leaving does not remove it.
        if [[ "$HAD_GWBRIDGE" == 0 ]]; then
            docker network rm docker_gwbridge >/dev/null 2>&1 || true
        fi
    fi
    exit "$rc"
}

healthy_replicas() {
    docker ps -q --filter "label=com.docker.swarm.service.name=$SERVICE" --filter health=healthy | wc -l
}

wait_healthy() { # count, timeout seconds
    local want=$1 deadline=$((SECONDS + $2))
    until [[ "$(healthy_replicas)" -ge "$want" ]]; do
        [[ $SECONDS -lt $deadline ]] || fail "fewer than $want healthy replicas after $2 s: $(docker service ps "$SERVICE" --no-trunc 2>&1)"
        sleep 2
    done
}

wait_balancer() { # timeout seconds
    local deadline=$((SECONDS + $1))
    until curl -fsS -m 2 -o /dev/null "$URL/ready" 2>/dev/null; do
        [[ $SECONDS -lt $deadline ]] || return 1
        sleep 1
    done
}

deploy() {
    log "docker stack deploy ($PUBLISH_MODE-mode port $PORT)"
    MODELS_DIR=$MODELS_DIR PORT=$PORT PUBLISH_MODE=$PUBLISH_MODE \
        docker stack deploy -c deploy/swarm/stack.yaml "$STACK"
}

upstream_for() { # affinity key -> replica name HAProxy chose
    curl -fsS -m 5 -o /dev/null -D - -H "X-Llama-Scorer-Affinity: $1" "$URL/v1/models" |
        tr -d '\r' | awk -F': ' 'tolower($1) == "x-llama-scorer-upstream" {print $2}'
}

docker image inspect llama-scorer:cpu >/dev/null 2>&1 || fail "no llama-scorer:cpu image (docker build -f docker/Dockerfile -t llama-scorer:cpu .)"
[[ -f "$MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf" ]] || fail "no test model in $MODELS_DIR (make models)"
if ! docker image inspect llama-scorer-haproxy:local >/dev/null 2>&1; then
    log "building llama-scorer-haproxy:local"
    docker build -q -t llama-scorer-haproxy:local deploy/haproxy
fi

if docker network inspect docker_gwbridge >/dev/null 2>&1; then HAD_GWBRIDGE=1; fi
trap cleanup EXIT
if [[ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]]; then
    log "docker swarm init --advertise-addr 127.0.0.1"
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
    STARTED_SWARM=1
fi

# 1. Up: three healthy replicas and the balancer.
deploy
wait_healthy 3 300
log "3 replicas healthy"
if ! wait_balancer 30; then
    if [[ "$PUBLISH_MODE" == ingress ]]; then
        log "the routing mesh (ingress) does not answer on port $PORT; redeploying with PUBLISH_MODE=host"
        PUBLISH_MODE=host
        deploy
        wait_balancer 60 || fail "balancer not answering on $URL in host mode either"
    else
        fail "balancer not answering on $URL"
    fi
fi
log "balancer answering on $URL ($PUBLISH_MODE mode)"

# 2. Affinity: 12 keys, each asked 3 times, must always land on the same replica; all 3 replicas used.
declare -A seen=()
for i in $(seq 1 12); do
    key=$(printf 'policy-and-prompt-%d' "$i" | sha256sum | cut -c1-32)
    first=$(upstream_for "$key")
    [[ -n "$first" ]] || fail "no X-Llama-Scorer-Upstream header from the balancer"
    for _ in 1 2; do
        again=$(upstream_for "$key")
        [[ "$again" == "$first" ]] || fail "key $key went to $first, then $again"
    done
    seen[$first]=1
done
log "affinity: 12 keys x 3 requests, each key stable; replicas used: ${!seen[*]}"
[[ ${#seen[@]} -eq 3 ]] || fail "keys spread over ${#seen[@]} replicas, not 3"
score=$(curl -fsS -m 60 -H 'Content-Type: application/json' \
    -H "X-Llama-Scorer-Affinity: $(printf 'smollm2|Hello' | sha256sum | cut -c1-32)" \
    -d '{"model": "smollm2-135m-instruct", "prompt": "Hello, my name is", "response": " Ada."}' \
    "$URL/v1/logprobs")
log "score through the balancer: $(printf '%s' "$score" | head -c 160)"

# 3. Health-driven restart: make one replica's /health unreachable while its process keeps running (drop
# TCP to port 8080 inside its network namespace; needs root and nsenter). Its health checks time out, and
# Swarm kills the task and starts a replacement. (`docker pause` does not do it: Docker 20.10 marks a
# paused container unhealthy without the event Swarm acts on.)
victim=$(docker ps -q --filter "label=com.docker.swarm.service.name=$SERVICE" | head -n1)
victim_pid=$(docker inspect -f '{{.State.Pid}}' "$victim")
log "dropping port 8080 inside replica $victim (pid $victim_pid): its health checks will time out"
t0=$SECONDS
nsenter -t "$victim_pid" -n iptables -I INPUT -p tcp --dport 8080 -j DROP
deadline=$((SECONDS + 120))
until [[ "$(docker inspect -f '{{.State.Status}}' "$victim" 2>/dev/null || echo gone)" =~ ^(exited|dead|gone)$ ]]; do
    [[ $SECONDS -lt $deadline ]] || fail "unhealthy replica not replaced after 120 s"
    sleep 2
done
log "unhealthy replica killed by Swarm after $((SECONDS - t0)) s"
wait_healthy 3 180
log "3 healthy replicas again after $((SECONDS - t0)) s"
docker service ps "$SERVICE" --format '{{.Name}} {{.DesiredState}} {{.CurrentState}} {{.Error}}' | head -n 6

# 4. Rolling update under traffic: a score request (POST /v1/logprobs) every 0.2 s through the balancer while
# every replica is replaced (start-first: the new task must be healthy before the old one gets SIGTERM).
statuses=$(mktemp)
(
    while :; do
        curl -s -m 30 -o /dev/null -w '%{http_code}\n' -H 'Content-Type: application/json' \
            -H "X-Llama-Scorer-Affinity: $(date +%N)" \
            -d '{"model": "smollm2-135m-instruct", "prompt": "The capital of France is", "response": " Paris."}' \
            "$URL/v1/logprobs" >>"$statuses" || true
        sleep 0.2
    done
) &
LOAD_PID=$!
log "docker service update --force $SERVICE (rolling, start-first)"
t0=$SECONDS
docker service update --force --quiet "$SERVICE" >/dev/null
wait_healthy 3 180
kill "$LOAD_PID"
LOAD_PID=""
total=$(wc -l <"$statuses")
ok=$(grep -c '^200$' "$statuses" || true)
log "rolling update done in $((SECONDS - t0)) s: $ok of $total requests answered 200 during it"
log "non-200 answers: $(grep -v '^200$' "$statuses" | sort | uniq -c | tr '\n' ' ')"
rm -f "$statuses"
[[ "$ok" -eq "$total" ]] || fail "$((total - ok)) requests failed during the rolling update"
log "PASS"
