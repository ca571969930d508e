#!/usr/bin/env bash
# Node loss on a real SLURM cluster (scripts/slurm-cluster.sh: a controller and three compute nodes with one
# GPU each, in containers): a JSONL file scored as a job array of SHARDS tasks by deploy/slurm/submit.sh,
# unchanged, with the merge after it; twice.
#
#   1. no failure: the merged file equals a one-process run of the same binary and config byte for byte;
#   then service mode (deploy/slurm/serve-and-score.sbatch: a server per node, clients with score --server),
#   merged output byte for byte the one-process run's;
#   2. a node killed mid-run (docker kill, while one of its tasks runs): SLURM marks the node down and
#      requeues its tasks on the two others (they resume their part files); the merged file again equals the
#      one-process run byte for byte, every (id, policy) exactly once, and at least one task was requeued.
#
# Prints the wall time of each run (submit to merged) and of the one-process run; writes them to
# target/slurm/timings.txt. Needs a Docker engine, the release binary and the models.
#
#   scripts/slurm-test.sh     (ITEMS=32 SHARDS=8 KEEP_CLUSTER=1 to leave the cluster up afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[slurm-test] $(date -u +%T) $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

export CLUSTER=${CLUSTER:-llama-scorer-slurm}
export RUN_DIR=${RUN_DIR:-$PWD/target/slurm/cluster}
ITEMS=${ITEMS:-32}
SHARDS=${SHARDS:-8}
RUN_TIMEOUT=${RUN_TIMEOUT:-420}
VICTIM=node3
SHARED=$RUN_DIR/shared
cluster() { scripts/slurm-cluster.sh "$@"; }

[ "$SHARDS" -ge 8 ] || fail "SHARDS must be at least 8"
docker info > /dev/null 2>&1 || fail "no Docker engine answers (docker info failed)"
# The controller's log stays in the run folder (what it decided about the lost node and the requeues).
finish() {
  docker logs "$CLUSTER-slurmctld" > "$RUN_DIR/slurmctld.log" 2>&1 || true
  [ "${KEEP_CLUSTER:-0}" = 1 ] || cluster down > /dev/null 2>&1 || true
}
trap finish EXIT
cluster up

# The input: ITEMS prompt/response pairs with ids; the config: the default test model.
python3 - "$SHARED/input.jsonl" "$ITEMS" << 'PY'
import json, sys
words = "the quick brown fox jumps over a lazy dog while seven wizards judge boxing near old rivers".split()
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        q = " ".join(words[(i * k) % len(words)] for k in range(1, 6 + i % 7))
        r = " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(6 + i % 11))
        f.write(json.dumps({"id": f"item-{i:03d}", "prompt": f"Question {i}: {q}?", "response": r}) + "\n")
PY
cat > "$SHARED/config.yaml" << 'YAML'
policies:
  smollm2-135m-instruct:
    model: /models/SmolLM2-135M-Instruct.Q4_1.gguf
    temperature: 1.0
YAML

# The one-process reference, on the controller (same binary, paths and CPU as the nodes).
rm -rf "$SHARED"/ref.jsonl "$SHARED"/run-*
mkdir -p "$SHARED/run-serve"
start=$SECONDS
cluster exec llama-scorer score -c config.yaml -i input.jsonl -o ref.jsonl --threads 1 --chunk 1 --no-progress \
  > "$RUN_DIR/reference.log" 2>&1 || { tail -5 "$RUN_DIR/reference.log" >&2; fail "the one-process run failed"; }
reference_s=$((SECONDS - start))
[ "$(wc -l < "$SHARED/ref.jsonl")" = "$ITEMS" ] || fail "the one-process run wrote $(wc -l < "$SHARED/ref.jsonl") lines, not $ITEMS"
log "one-process run: $ITEMS lines in ${reference_s}s"

# A job's state as scontrol shows it (PENDING, RUNNING, COMPLETED, FAILED, ...; several for an array).
job_states() { cluster exec scontrol show job -o "$1" 2> /dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 | sort | uniq -c | tr '\n' ' '; }

# Submit the array and its merge as a user would; sets ARRAY and MERGE.
submit() {
  local out=$1 ids
  # One CPU per task (the nodes have two); the GPU request stays the script's own --gres=gpu:1.
  ids=$(cluster exec env SCORE_ARGS="--chunk 1" /opt/llama-scorer/slurm/submit.sh -c /shared/config.yaml \
    -i /shared/input.jsonl -o "$out" -n "$SHARDS" -- --cpus-per-task=1)
  ARRAY=$(awk '/^array/ {print $2}' <<< "$ids")
  MERGE=$(awk '/^merge/ {print $2}' <<< "$ids")
  if [ -z "$ARRAY" ] || [ -z "$MERGE" ]; then fail "submit.sh printed no job ids: $ids"; fi
  log "submitted array $ARRAY ($SHARDS tasks) and merge $MERGE"
}

# Wait for the merge job to finish; fails on anything but COMPLETED.
wait_merge() {
  local deadline=$((SECONDS + RUN_TIMEOUT)) state
  while [ "$SECONDS" -lt "$deadline" ]; do
    state=$(cluster exec scontrol show job -o "$MERGE" 2> /dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
    case $state in
      COMPLETED) return 0 ;;
      FAILED | CANCELLED | TIMEOUT | OUT_OF_MEMORY | NODE_FAIL)
        cat "$SHARED"/run-*/logs/merge-*.log >&2 2> /dev/null || true
        fail "merge job $MERGE ended $state (array: $(job_states "$ARRAY"))" ;;
    esac
    sleep 1
  done
  cluster status >&2 || true
  fail "no merged output after ${RUN_TIMEOUT}s (array: $(job_states "$ARRAY"), merge: $(job_states "$MERGE"))"
}

# The merged file against the reference: byte for byte, and every (id, policy) exactly once.
check_merged() {
  local merged=$1
  python3 - "$merged" "$SHARED/input.jsonl" << 'PY' || fail "$merged: not every (id, policy) exactly once"
import json, sys
pairs = [(r["id"], r["policy"]) for r in map(json.loads, open(sys.argv[1]))]
ids = [json.loads(l)["id"] for l in open(sys.argv[2])]
assert len(pairs) == len(set(pairs)) == len(ids), (len(pairs), len(set(pairs)), len(ids))
assert sorted(i for i, _ in pairs) == sorted(ids)
PY
  cmp "$merged" "$SHARED/ref.jsonl" || fail "$merged differs from the one-process run"
  log "$merged: $(wc -l < "$merged") lines, byte for byte the one-process run's, every (id, policy) once"
}

# 1. No failure.
start=$SECONDS
submit /shared/run-plain
wait_merge
plain_s=$((SECONDS - start))
check_merged "$SHARED/run-plain/scores.jsonl"
log "array without failure: ${plain_s}s from submit to merged"

# Service mode: a server per node as one job step, three clients with score --server, the merge.
start=$SECONDS
MERGE=$(cluster exec env SCORE_CONFIG=/shared/config.yaml SCORE_INPUT=/shared/input.jsonl \
  SCORE_OUT=/shared/run-serve sbatch --parsable --nodes=3 --cpus-per-task=1 --output=/shared/run-serve/job-%j.log \
  /opt/llama-scorer/slurm/serve-and-score.sbatch)
ARRAY=$MERGE
log "submitted serve-and-score $MERGE on 3 nodes"
wait_merge
serve_s=$((SECONDS - start))
check_merged "$SHARED/run-serve/scores.jsonl"
log "service mode (3 servers, 3 clients): ${serve_s}s from submit to merged"

# 2. A node killed while one of its tasks runs (after its first line when the task is slow enough to see one).
start=$SECONDS
submit /shared/run-kill
# The victim: a task running on $VICTIM, once it has written a line (so its requeued run resumes), or the
# one running there 30 s after the first was seen.
deadline=$((SECONDS + RUN_TIMEOUT))
victim_task="" first_seen=""
while [ "$SECONDS" -lt "$deadline" ]; do
  task=$(cluster exec squeue -h -j "$ARRAY" -t RUNNING -w "$VICTIM" -o %K 2> /dev/null | head -1)
  if [ -n "$task" ]; then
    first_seen=${first_seen:-$SECONDS}
    if [ -s "$SHARED/run-kill/part-$task.jsonl" ] || [ $((SECONDS - first_seen)) -ge 30 ]; then
      victim_task=$task
      break
    fi
  fi
  sleep 0.2
done
[ -n "$victim_task" ] || fail "no task of array $ARRAY ran on $VICTIM"
part=$SHARED/run-kill/part-$victim_task.jsonl
written=$( (wc -l < "$part") 2> /dev/null || echo 0)
docker kill "$CLUSTER-$VICTIM" > /dev/null
killed_at=$SECONDS
log "killed $VICTIM while task $victim_task ran there ($written lines of its part written)"
wait_merge
kill_s=$((SECONDS - start))
check_merged "$SHARED/run-kill/scores.jsonl"
# What the controller decided, in its own words, and the victim task's two runs in its log.
docker logs "$CLUSTER-slurmctld" 2>&1 | grep -E "^\[" | grep -E "$VICTIM not responding, setting DOWN|due to failure of node $VICTIM" >&2 \
  || fail "slurmctld did not declare $VICTIM down and requeue its task"
requeued=$(cluster exec scontrol show job -o "$ARRAY" | grep -c 'Restarts=[1-9]' || true)
[ "$requeued" -ge 1 ] || fail "no task of array $ARRAY was requeued"
task_log=$SHARED/run-kill/logs/score-${ARRAY}_$victim_task.log
grep -q "(run 2)" "$task_log" || fail "task $victim_task's log shows no second run"
log "$requeued task(s) requeued; task $victim_task ran again elsewhere:"
grep -hE "task $victim_task of job|^scored" "$task_log" >&2
log "array with $VICTIM killed: ${kill_s}s from submit to merged ($((SECONDS - killed_at))s after the kill)"

timings="one-process ${reference_s}s; array of $SHARDS over 3 nodes ${plain_s}s; with a node killed ${kill_s}s; service mode ${serve_s}s ($ITEMS items, $(nproc) host cores)"
echo "$timings" > target/slurm/timings.txt
log "PASS: $timings"
