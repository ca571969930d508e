#!/usr/bin/env bash
# GPU check, run on a CUDA host from the repo root with a kit made by scripts/prepare-gpu-kit.sh.
# The host needs the CUDA toolkit, CMake, Python 3 with numpy; no Rust, no network. In one run it:
#   1. builds llama.cpp's shared libraries and CUDA backend from the carried source (scripts/gpu/build-on-device.sh);
#   2. writes a synthetic Llama-3-8B-shaped Q4_K model (random weights, 128,256-token vocabulary);
#   3. times, on that model with every layer offloaded, llama.cpp's plain prompt processing against the same
#      decodes with logits at the response positions and against llama-scorer's whole engine path
#      (`llama-scorer bench-engine --prompt-processing`);
#   4. serves the model and checks that /v1/logprobs numbers are bit-identical across repeats, batch
#      composition and concurrent clients;
#   5. scores a few items on the GPU and again with the GPU hidden (CPU), and reports how far apart they are in
#      nats; with IMAGE_DIST, runs the CUDA image's own binary and libraries (steps 3-5, shorter) the same way;
#   6. prints the table last. Logs and JSON (at most 8 files) go to $OUT when it is set, else
#      /tmp/gpu-check; scratch files to $WORK (/tmp/gpu-check-work).
#
# Usage: bash scripts/gpu-check.sh
# Environment (all optional):
#   KIT=.gpu-kit                 the kit folder (llama.cpp source, gguf wheel, bin/llama-scorer)
#   MODEL=/tmp/m8b.gguf          where the synthetic model is written (kept if present)
#   SHAPE=8b                     8b, or tiny for a quick dry run
#   LIBS=DIR                     use llama.cpp libraries already built in DIR instead of building them
#                                (the CPU dry run points it at a dynamic-backends cargo build)
#   REQUIRE_GPU=1                fail unless a GPU device is found and every layer is offloaded
#   CUDA_ARCHITECTURES=90        passed to the CUDA build (H100/H200: 90)
#   REPEAT=3                     timed passes of bench-engine
#   NATS_ITEMS=4                 items scored on both devices for the CUDA-vs-CPU difference
#   IMAGE_DIST=DIR               the CUDA image's /opt/llama-scorer tree (DIST=DIR scripts/cuda-image.sh copies it
#                                out): its binary, libllama/libggml and libggml-cuda.so (CUDA 11.8) are run too,
#                                where this host has the CUDA 11 runtime libraries they link (else said and skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=${KIT:-.gpu-kit}
SHAPE=${SHAPE:-8b}
MODEL=${MODEL:-/tmp/m${SHAPE}.gguf}
REQUIRE_GPU=${REQUIRE_GPU:-1}
REPEAT=${REPEAT:-3}
OUT_DIR=${OUT:-/tmp/gpu-check}
WORK=${WORK:-/tmp/gpu-check-work}
mkdir -p "$OUT_DIR" "$WORK"
LOG=$OUT_DIR/gpu-check.log
: > "$LOG"
say() { echo "[gpu-check $(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
die() { say "FAILED: $*"; exit 1; }

BIN=$KIT/bin/llama-scorer
[ -x "$BIN" ] || die "$BIN missing: run scripts/prepare-gpu-kit.sh on the development machine and carry $KIT"
CARD=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
say "card: ${CARD:-none found by nvidia-smi}; cores: $(nproc)"

# 1-2. llama.cpp + CUDA backend from the carried source, and the model (in parallel).
started=$(date +%s)
if [ -z "${LIBS:-}" ]; then
  say "building llama.cpp with CUDA (CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES:-90}) and writing $MODEL ($SHAPE)"
  out=$(bash "$KIT/build-on-device.sh" "$KIT" --model "$MODEL" "$SHAPE" 2>&1 | tee -a "$LOG") \
    || { cp /tmp/llama-build.log /tmp/llama-cmake.log "$OUT_DIR/" 2>/dev/null || true; die "llama.cpp build"; }
  LIBS=$(echo "$out" | sed -n 's/^LIBS=//p' | tail -1)
else
  say "using prebuilt llama.cpp libraries in $LIBS"
  if [ ! -f "$MODEL" ]; then
    wheel=$(find "$KIT/whl" -name 'gguf-*.whl' | head -1)
    PYTHONPATH=$wheel python3 "$KIT/gen_model.py" "$MODEL" "$SHAPE" >> "$LOG" 2>&1 || die "model generation"
  fi
fi
[ -d "$LIBS" ] || die "no library folder"
say "llama.cpp ready in $LIBS after $(( $(date +%s) - started )) s; model $MODEL ($(du -h "$MODEL" | cut -f1))"
export LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LLAMA_SCORER_BACKENDS_DIR=$LIBS

# Devices as llama-scorer sees them.
"$BIN" devices > "$OUT_DIR/devices.json" 2>> "$LOG" || die "llama-scorer devices (see $LOG)"
gpus=$(python3 -c 'import json,sys; print(sum(d["kind"] in ("gpu","igpu") for d in json.load(open(sys.argv[1]))["devices"]))' "$OUT_DIR/devices.json")
say "devices: $(cat "$OUT_DIR/devices.json")"
if [ "$gpus" = 0 ] && [ "$REQUIRE_GPU" = 1 ]; then die "llama-scorer found no GPU device"; fi

# 3. Throughput: engine alone (prompt processing; scoring's decodes) vs the engine path with log-softmax.
python3 scripts/gpu/gpu_check.py items "$WORK/items.jsonl" --n 16 --chars 256
say "bench-engine: $REPEAT passes over 16 items"
"$BIN" bench-engine --model "$MODEL" --items "$WORK/items.jsonl" --repeat "$REPEAT" --prompt-processing \
  > "$OUT_DIR/bench.json" 2>> "$LOG" || die "bench-engine (see $LOG)"
say "bench: $(cat "$OUT_DIR/bench.json")"
if [ "$REQUIRE_GPU" = 1 ]; then
  python3 - "$OUT_DIR/bench.json" <<'PY' || die "the model was not fully offloaded"
import json, sys
b = json.load(open(sys.argv[1]))
sys.exit(0 if b["device"] != "CPU" and b["offloaded_layers"] > 0 else 1)
PY
fi

# A server of $1 (binary) on $MODEL with the libraries in $2, environment $3... (name=value); sets $server and
# $url, waits for /ready. stop_server ends it.
start_server() {
  local bin=$1 libs=$2 port
  shift 2
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  env LD_LIBRARY_PATH="$libs" LLAMA_SCORER_BACKENDS_DIR="$libs" "$@" \
    "$bin" serve --model "$MODEL" --alias m --host 127.0.0.1 --port "$port" --cache-bytes 0 >> "$OUT_DIR/serve.log" 2>&1 &
  server=$!
  url=http://127.0.0.1:$port
  for _ in $(seq 1 300); do
    curl -fsS "$url/ready" > /dev/null 2>&1 && return 0
    kill -0 "$server" 2>/dev/null || die "server exited (see $OUT_DIR/serve.log)"
    sleep 1
  done
  die "server not ready after 300 s (see $OUT_DIR/serve.log)"
}
stop_server() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}
trap 'kill "${server:-}" 2>/dev/null || true' EXIT
: > "$OUT_DIR/serve.log"
NATS_ITEMS=${NATS_ITEMS:-4}
nats_files=()

# 4. Determinism over HTTP: repeats, batch composition, concurrency; then the first items scored for step 5.
start_server "$BIN" "$LIBS"
say "ready: $(curl -fsS "$url/ready")"
det_rc=0
python3 scripts/gpu/gpu_check.py determinism --url "$url" --model m \
  --items "$WORK/items.jsonl" --out "$OUT_DIR/determinism.json" 2>> "$LOG" || det_rc=$?
python3 scripts/gpu/gpu_check.py score --url "$url" --model m --items "$WORK/items.jsonl" --n "$NATS_ITEMS" \
  --out "$WORK/scores-gpu.json" 2>> "$LOG" || die "scoring for the device comparison"
stop_server
[ -f "$OUT_DIR/determinism.json" ] || die "determinism check (see $LOG)"

# 5. The same items with every GPU hidden: llama.cpp's CPU backend, same binary and model.
say "scoring $NATS_ITEMS items with the GPU hidden (CUDA_VISIBLE_DEVICES='')"
start_server "$BIN" "$LIBS" CUDA_VISIBLE_DEVICES=
python3 scripts/gpu/gpu_check.py score --url "$url" --model m --items "$WORK/items.jsonl" --n "$NATS_ITEMS" \
  --out "$WORK/scores-cpu.json" 2>> "$LOG" || die "scoring on the CPU"
stop_server
label="CUDA vs CPU (same binary, GPU hidden)"
[ "$gpus" != 0 ] || label="CPU vs CPU (no GPU here: a dry run of the comparison)"
python3 scripts/gpu/gpu_check.py nats "$WORK/scores-gpu.json" "$WORK/scores-cpu.json" --label "$label" \
  --out "$WORK/nats-cpu.json" 2>> "$LOG" || die "comparison"
nats_files+=(--nats "$WORK/nats-cpu.json")

# 5b. The CUDA image's binary path: its own binary and libraries (built with Debian's CUDA 11.8 for sm_90).
if [ -n "${IMAGE_DIST:-}" ]; then
  missing=$(ldd "$IMAGE_DIST/libggml-cuda.so" 2>/dev/null | awk '/not found/ {print $1}' | tr '\n' ' ')
  if [ ! -x "$IMAGE_DIST/llama-scorer" ] || [ ! -f "$IMAGE_DIST/libggml-cuda.so" ]; then
    say "IMAGE_DIST=$IMAGE_DIST holds no llama-scorer and libggml-cuda.so: the image path is skipped"
  elif [ -n "$missing" ]; then
    say "the image's libggml-cuda.so needs libraries this host lacks ($missing): the image path is skipped (its CUDA backend would not load)"
  else
    say "the CUDA image's binary path: bench-engine (1 pass), determinism, $NATS_ITEMS items vs the kit build"
    LD_LIBRARY_PATH=$IMAGE_DIST LLAMA_SCORER_BACKENDS_DIR=$IMAGE_DIST "$IMAGE_DIST/llama-scorer" bench-engine \
      --model "$MODEL" --items "$WORK/items.jsonl" --repeat 1 > "$OUT_DIR/bench-image.json" 2>> "$LOG" \
      || die "bench-engine of the image's binary (see $LOG)"
    say "bench (image): $(cat "$OUT_DIR/bench-image.json")"
    start_server "$IMAGE_DIST/llama-scorer" "$IMAGE_DIST"
    python3 scripts/gpu/gpu_check.py determinism --url "$url" --model m --items "$WORK/items.jsonl" \
      --out "$WORK/determinism-image.json" 2>> "$LOG" || det_rc=$?
    python3 scripts/gpu/gpu_check.py score --url "$url" --model m --items "$WORK/items.jsonl" --n "$NATS_ITEMS" \
      --out "$WORK/scores-image.json" 2>> "$LOG" || die "scoring with the image's binary"
    stop_server
    python3 scripts/gpu/gpu_check.py nats "$WORK/scores-image.json" "$WORK/scores-gpu.json" \
      --label "image build (CUDA 11.8) vs kit build" --out "$WORK/nats-image.json" 2>> "$LOG" || die "comparison"
    python3 scripts/gpu/gpu_check.py nats "$WORK/scores-image.json" "$WORK/scores-cpu.json" \
      --label "image build on the GPU vs CPU" --out "$WORK/nats-image-cpu.json" 2>> "$LOG" || die "comparison"
    nats_files+=(--nats "$WORK/nats-image.json" --nats "$WORK/nats-image-cpu.json")
  fi
fi

# 6. The table, last.
python3 scripts/gpu/gpu_check.py table --bench "$OUT_DIR/bench.json" --determinism "$OUT_DIR/determinism.json" \
  --devices "$OUT_DIR/devices.json" --card "$CARD" --model-name "synthetic Q4_K model, shape $SHAPE (8b: Llama-3-8B)" \
  "${nats_files[@]}" | tee "$OUT_DIR/table.md"
[ "$det_rc" = 0 ] || die "results were not bit-identical"
say "done in $(( $(date +%s) - started )) s"
