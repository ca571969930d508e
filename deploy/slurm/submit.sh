#!/usr/bin/env bash
# Submit a sharded scoring run: a job array of N tasks (score-array.sbatch, one shard each, requeue-safe) and
# the merge that runs after every task succeeded (merge.sbatch, --dependency=afterok). Prints the two job
# ids; the result is OUT/scores.jsonl, the logs OUT/logs/.
#
#   deploy/slurm/submit.sh -c config.yaml -i input.jsonl -o out -n 16 [-m 8] [-- more sbatch options]
#
#   -n N   shards (array tasks 0..N-1)     -m M   at most M tasks at once (--array=0-(N-1)%M)
#   after --: options for the array's sbatch (e.g. --partition=gpu --time=2:00:00 --cpus-per-task=8)
#
# Environment passed to the jobs: SCORE_POLICIES, SCORE_ARGS, LLAMA_SCORER, SCORE_LOCK_WAIT (see
# score-array.sbatch). Paths must be on a file system every node sees. Rerunning with the same OUT resumes
# (each task skips what its part file holds); OUT remembers N and refuses another one, whose partition differs.
set -euo pipefail

here=$(dirname "$(realpath "$0")")
usage() { sed -n '2,14p' "$0" >&2; exit 2; }

config="" input="" out="" shards="" max=""
while getopts "c:i:o:n:m:h" opt; do
  case $opt in
    c) config=$OPTARG ;;
    i) input=$OPTARG ;;
    o) out=$OPTARG ;;
    n) shards=$OPTARG ;;
    m) max=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
if [ -z "$config" ] || [ -z "$input" ] || [ -z "$out" ] || [ -z "$shards" ]; then usage; fi
[[ $shards =~ ^[1-9][0-9]*$ ]] || { echo "submit.sh: -n must be a positive integer, not '$shards'" >&2; exit 2; }
[ -z "$max" ] || [[ $max =~ ^[1-9][0-9]*$ ]] || { echo "submit.sh: -m must be a positive integer" >&2; exit 2; }
[ -f "$config" ] || { echo "submit.sh: no config file $config" >&2; exit 2; }
[ -f "$input" ] || { echo "submit.sh: no input file $input" >&2; exit 2; }

export SCORE_CONFIG SCORE_INPUT SCORE_OUT
SCORE_CONFIG=$(realpath "$config")
SCORE_INPUT=$(realpath "$input")
SCORE_OUT=$(realpath -m "$out")
mkdir -p "$SCORE_OUT/logs"
if [ -f "$SCORE_OUT/shards" ] && [ "$(cat "$SCORE_OUT/shards")" != "$shards" ]; then
  echo "submit.sh: $SCORE_OUT holds parts of $(cat "$SCORE_OUT/shards") shards, not $shards; use another folder" >&2
  exit 2
fi
echo "$shards" > "$SCORE_OUT/shards"

array=$(sbatch --parsable --array="0-$((shards - 1))${max:+%$max}" --export=ALL \
  --output="$SCORE_OUT/logs/score-%A_%a.log" "$@" "$here/score-array.sbatch")
array=${array%%;*}
merge=$(sbatch --parsable --dependency="afterok:$array" --kill-on-invalid-dep=yes --export=ALL \
  --output="$SCORE_OUT/logs/merge-%j.log" "$here/merge.sbatch")
merge=${merge%%;*}
echo "array $array"
echo "merge $merge"
