#!/usr/bin/env bash
# Three llama-scorer containers behind Debian's nginx with deploy/nginx/nginx.conf (test copy: replicas on
# 127.0.0.1 ports), checked for real: every affinity key keeps its replica; keys spread over all three;
# `llama-scorer score --server` through nginx while one replica is killed and another restarted mid-run writes every
# line once, bit-identical to the same run against one replica alone; once that replica is gone, only its
# keys move (consistent hashing) and requests keep succeeding (retry on the next upstream); then everything
# is removed. Needs llama-scorer:cpu, the host binary (cargo build --release; LLAMA_SCORER_BIN overrides),
# nginx (apt-get install nginx) and the test models (make models).
#
#   scripts/nginx-test.sh          # PORT=18090: nginx; PORT+1..PORT+3: the replicas
set -euo pipefail

cd "$(dirname "$0")/.."
PORT=${PORT:-18090}
MODELS_DIR=$(readlink -f "${MODELS_DIR:-models}")
NAME=llama-scorer-nginx-test
BIN=$(readlink -f "${LLAMA_SCORER_BIN:-target/release/llama-scorer}")
LINES=${LINES:-300}
tmp=$(mktemp -d)
chmod 755 "$tmp" # nginx workers (nobody, when started as root) write their temporary files here
URL="http://127.0.0.1:$PORT"

log() { printf '[nginx-test %s] %s\n' "$(date +%T)" "$*"; }
fail() { log "FAIL: $*"; exit 1; }

cleanup() {
    local rc=$?
    if [[ -f "$tmp/nginx.pid" ]]; then kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true; fi
    for i in 1 2 3; do docker rm -f "$NAME-$i" >/dev/null 2>&1 || true; done
    rm -rf "$tmp"
    log "removed the replicas and nginx (exit status $rc)"
    exit "$rc"
}

command -v nginx >/dev/null || fail "nginx not installed (apt-get install nginx)"
[[ -x "$BIN" ]] || fail "no llama-scorer binary at $BIN (cargo build --release)"
docker image inspect llama-scorer:cpu >/dev/null 2>&1 || fail "no llama-scorer:cpu image"
trap cleanup EXIT

for i in 1 2 3; do
    docker run -d --name "$NAME-$i" --read-only --tmpfs /tmp -p "127.0.0.1:$((PORT + i)):8080" \
        -v "$MODELS_DIR:/models:ro" llama-scorer:cpu \
        serve --model /models/SmolLM2-135M-Instruct.Q4_1.gguf --alias smollm2-135m-instruct \
        --host 0.0.0.0 --port 8080 --threads 1 >/dev/null
done
for i in 1 2 3; do
    deadline=$((SECONDS + 120))
    until curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$((PORT + i))/ready" 2>/dev/null; do
        [[ $SECONDS -lt $deadline ]] || fail "replica $i not ready"
        sleep 1
    done
done
log "3 replicas ready on ports $((PORT + 1))-$((PORT + 3))"

sed -e "s/scorer-1:8080/127.0.0.1:$((PORT + 1))/" -e "s/scorer-2:8080/127.0.0.1:$((PORT + 2))/" \
    -e "s/scorer-3:8080/127.0.0.1:$((PORT + 3))/" -e "s/listen 8080;/listen 127.0.0.1:$PORT;/" \
    -e "s|pid /tmp/nginx-llama-scorer.pid|pid $tmp/nginx.pid|" \
    -e "s|/tmp/nginx-|$tmp/nginx-|" \
    -e "s|access_log /dev/stdout scorer|access_log $tmp/access.log scorer|" \
    -e "s|error_log stderr warn|error_log $tmp/error.log warn|" \
    deploy/nginx/nginx.conf >"$tmp/nginx.conf"
nginx -t -q -c "$tmp/nginx.conf" -e "$tmp/error.log"
nginx -c "$tmp/nginx.conf" -e "$tmp/error.log"
sleep 1
log "nginx on $URL: $(grep -c 'server 127.0.0.1' "$tmp/nginx.conf") upstreams"

upstream_for() {
    curl -fsS -m 30 -o /dev/null -D - -H 'Content-Type: application/json' -H "X-Llama-Scorer-Affinity: $1" \
        -d '{"model": "smollm2-135m-instruct", "prompt": "Hello", "response": " there."}' "$URL/v1/logprobs" |
        tr -d '\r' | awk -F': ' 'tolower($1) == "x-llama-scorer-upstream" {print $2}'
}

declare -A before=()
declare -A used=()
for i in $(seq 1 24); do
    key=$(printf 'key-%d' "$i" | sha256sum | cut -c1-32)
    first=$(upstream_for "$key")
    [[ "$(upstream_for "$key")" == "$first" ]] || fail "key $i moved between two requests"
    before[$key]=$first
    used[$first]=1
done
log "affinity: 24 keys, each stable over 2 requests; replicas used: ${!used[*]}"
[[ ${#used[@]} -eq 3 ]] || fail "keys spread over ${#used[@]} replicas, not 3"

# A batch run through nginx, one replica killed and another restarted mid-run; the reference is the same run
# against replica 1 alone.
cat >"$tmp/config.yaml" <<YAML
policies:
  smollm2-135m-instruct: {model: /models/SmolLM2-135M-Instruct.Q4_1.gguf, temperature: 0.7}
YAML
python3 - "$LINES" >"$tmp/in.jsonl" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    if i % 3 == 2:
        print(json.dumps({"id": i, "messages": [{"role": "user", "content": f"Count to {i}."}], "response": f"1 2 {i}"}))
    else:
        print(json.dumps({"id": i, "prompt": f"Question {i // 2}: what comes after {i}?", "response": f" {i + 1}, then {i + 2}."}))
PY
score_through() { # url output
    "$BIN" score --no-progress --token-logprobs --config "$tmp/config.yaml" --input "$tmp/in.jsonl" \
        --output "$2" --server "$1" --concurrency 4 --retries 12 2>>"$tmp/score.log"
}
t0=$SECONDS
score_through "http://127.0.0.1:$((PORT + 1))" "$tmp/reference.jsonl"
log "reference: $LINES lines scored against replica 1 alone in $((SECONDS - t0)) s"
victim="127.0.0.1:$((PORT + 2))"
t0=$SECONDS
score_through "$URL" "$tmp/balanced.jsonl" &
score_pid=$!
lines_written() { if [[ -f "$tmp/balanced.jsonl" ]]; then wc -l <"$tmp/balanced.jsonl"; else echo 0; fi; }
until [[ "$(lines_written)" -ge $((LINES / 4)) ]]; do
    kill -0 "$score_pid" 2>/dev/null || fail "the balanced run ended before the kill"
    sleep 0.2
done
written=$(lines_written)
docker kill "$NAME-2" >/dev/null
log "killed replica 2 ($victim) with $written of $LINES lines written"
until [[ "$(lines_written)" -ge $((LINES / 2)) ]]; do
    kill -0 "$score_pid" 2>/dev/null || break
    sleep 0.2
done
written=$(lines_written)
docker restart -t 35 "$NAME-3" >/dev/null
log "restarted replica 3 (SIGTERM, drain, start) with $written of $LINES lines written"
wait "$score_pid" || fail "score --server through nginx failed after the kill: $(tail -n 5 "$tmp/score.log")"
log "balanced run done in $((SECONDS - t0)) s"
python3 - "$tmp/reference.jsonl" "$tmp/balanced.jsonl" "$LINES" <<'PY' || fail "the balanced run differs from the reference"
import json, sys
def lines(path):
    out = {}
    for line in open(path):
        v = json.loads(line)
        assert "error" not in v, v
        v.pop("cached", None)
        key = (v["id"], v["policy"])
        assert key not in out, f"duplicate line {key}"
        out[key] = json.dumps(v, sort_keys=True)  # shortest round-trip floats: equal strings, equal bits
    return out
ref, got = lines(sys.argv[1]), lines(sys.argv[2])
assert len(ref) == int(sys.argv[3]), len(ref)
assert ref.keys() == got.keys(), sorted(ref.keys() ^ got.keys())
differ = [k for k in ref if ref[k] != got[k]]
assert not differ, differ[:5]
print(f"[nginx-test] {len(got)} lines, each once, bit-identical to the one-replica run")
PY
deadline=$((SECONDS + 120))
until curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$((PORT + 3))/ready" 2>/dev/null; do
    [[ $SECONDS -lt $deadline ]] || fail "replica 3 not ready again after its restart"
    sleep 1
done
# nginx stops sending to an upstream for fail_timeout (10 s) after max_fails refused attempts: the restarted
# replica gets its keys back once that has passed.
sleep 11
moved=0
kept=0
for key in "${!before[@]}"; do
    now=$(upstream_for "$key")
    [[ -n "$now" ]] || fail "key $key got no answer after replica 2 stopped"
    [[ "$now" != *"$victim"* || "$now" == *", "* ]] || fail "key $key still sent only to the stopped replica"
    if [[ "${before[$key]}" == "$victim" ]]; then
        moved=$((moved + 1))
    elif [[ "${now##*, }" == "${before[$key]}" ]]; then
        kept=$((kept + 1))
    else
        fail "key $key moved from ${before[$key]} to $now although its replica is up"
    fi
done
log "after killing replica 2: all 24 keys answered; $moved keys of the stopped replica moved, the other $kept kept their replica"
log "nginx error log: $(grep -c . "$tmp/error.log" || true) lines; upstream failures tried next: $(grep -c 'failed\|refused' "$tmp/error.log" || true)"
log "PASS"
