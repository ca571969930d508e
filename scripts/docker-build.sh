#!/usr/bin/env bash
# Every build step of docker/Dockerfile and docker/Dockerfile.cuda, as commands CI runs too (CI has no Docker
# engine: `make docker-steps` runs deps, build, stage, runtime-deps and smoke on the host).
#
#   deps                  install the build packages (cmake, clang, libclang-dev, a C/C++ toolchain) if missing
#   build [FEATURES]      cargo build --release --locked [--features FEATURES]  (env CARGO_TARGET_DIR, and
#                         BUILD_JOBS: parallel jobs of cargo and of llama.cpp's CMake build, unset: one per CPU)
#   stage DEST            copy the release binary and, for dynamic-backends builds, llama.cpp's shared
#                         libraries and backend modules into DEST; check the staged binary runs from there
#   runtime-deps          install the runtime packages (libgomp1, libstdc++6, curl for HEALTHCHECK) if missing
#   smoke DEST MODEL      serve MODEL with the staged binary, probe /health as the image's HEALTHCHECK does,
#                         check /ready names a device per model and /v1/logprobs answers; then stop it
set -euo pipefail

log() { echo "[docker-build] $*" >&2; }

apt_install() {
  [ $# -gt 0 ] || return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing: $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
  # Keep images small (the Dockerfiles set APT_CLEAN=1); on a developer or CI host the lists stay.
  if [ "${APT_CLEAN:-0}" = 1 ]; then $sudo rm -rf /var/lib/apt/lists/*; fi
}

cmd_deps() {
  local need=()
  command -v cmake >/dev/null 2>&1 || need+=(cmake)
  command -v clang >/dev/null 2>&1 || need+=(clang)
  dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
  { command -v cc && command -v c++ && command -v make; } >/dev/null 2>&1 || need+=(build-essential)
  dpkg -s ca-certificates >/dev/null 2>&1 || need+=(ca-certificates)
  apt_install "${need[@]}"
  command -v cargo >/dev/null 2>&1 || { log "cargo not found: the builder image must provide Rust"; exit 1; }
}

# llama.cpp's CMake build, kept in the target dir between builds, keeps the CUDA architectures of its first
# configure even when CMAKE_CUDA_ARCHITECTURES changes: drop its CMake cache then (objects whose compile
# commands are unchanged, the CPU variants, are not rebuilt) and cargo's record of its build script (which does
# not watch that variable), so that the script runs again.
forget_other_cuda_architectures() {
  [ -n "${CMAKE_CUDA_ARCHITECTURES:-}" ] || return 0
  local build stamp
  for build in "${CARGO_TARGET_DIR:-target}"/release/build/llama-cpp-sys-2-*/out/build; do
    [ -d "$build" ] || continue
    stamp=$build/.cuda-architectures
    if [ "$(cat "$stamp" 2>/dev/null)" != "$CMAKE_CUDA_ARCHITECTURES" ]; then
      log "CUDA architectures now $CMAKE_CUDA_ARCHITECTURES: reconfiguring $build"
      rm -f "$build/CMakeCache.txt"
      rm -rf "${CARGO_TARGET_DIR:-target}"/release/.fingerprint/llama-cpp-sys-2-*
    fi
    echo "$CMAKE_CUDA_ARCHITECTURES" > "$stamp"
  done
}

# After a build, every llama.cpp build folder records the CUDA architectures it was configured with, so that
# the next build with the same ones (a cached rebuild) does not reconfigure it. (A cold build has no folder
# when forget_other_cuda_architectures runs; without this a cached rebuild dropped its CMake cache, and then
# llama-cpp-sys-2's build script did not find llama.cpp's common library: seen once, not yet understood.)
record_cuda_architectures() {
  [ -n "${CMAKE_CUDA_ARCHITECTURES:-}" ] || return 0
  local build
  for build in "${CARGO_TARGET_DIR:-target}"/release/build/llama-cpp-sys-2-*/out/build; do
    [ -d "$build" ] && echo "$CMAKE_CUDA_ARCHITECTURES" > "$build/.cuda-architectures"
  done
  return 0
}

# CUDA 11.8 (Debian's toolkit, which the stand-in CUDA bases carry) lacks the two device functions of Hopper's
# programmatic dependent launch that llama.cpp calls in sm_90 code, so sm_90 did not compile: pre-include them
# into every CUDA source (docker/cuda-11-pdl.h says what they are). Nothing changes with CUDA 12 or newer.
cuda_11_compat() {
  [[ "${1:-}" == *cuda* ]] && command -v nvcc > /dev/null 2>&1 || return 0
  local major shim
  major=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
  { [ -n "$major" ] && [ "$major" -lt 12 ]; } || return 0
  shim=$(cd "$(dirname "$0")/.." && pwd)/docker/cuda-11-pdl.h
  [ -f "$shim" ] || { log "$shim missing: needed to build sm_90 with CUDA $major"; exit 1; }
  export CMAKE_CUDA_FLAGS="${CMAKE_CUDA_FLAGS:+$CMAKE_CUDA_FLAGS }-include $shim"
  log "CUDA $major: pre-including $shim (programmatic dependent launch's device functions)"
}

cmd_build() {
  local features=${1:-}
  local args=(build --release --locked)
  [ -z "$features" ] || args+=(--features "$features")
  [ -z "${BUILD_JOBS:-}" ] || args+=(--jobs "$BUILD_JOBS")
  cuda_11_compat "$features"
  forget_other_cuda_architectures
  log "cargo ${args[*]} (target dir ${CARGO_TARGET_DIR:-target})"
  cargo "${args[@]}"
  record_cuda_architectures
}

# The llama-cpp-sys-2 build output of the newest build in the target dir that made shared libraries.
sys_out_dir() {
  local release=$1
  find "$release/build" -maxdepth 4 -path '*/llama-cpp-sys-2-*/out/lib/libllama.so' -printf '%T@ %h\n' 2>/dev/null \
    | sort -n | tail -1 | cut -d' ' -f2 | xargs -r dirname
}

cmd_stage() {
  local dest=${1:?stage DEST}
  local release=${CARGO_TARGET_DIR:-target}/release
  local bin=$release/llama-scorer
  [ -x "$bin" ] || { log "$bin not built"; exit 1; }
  rm -rf "$dest" && mkdir -p "$dest"
  cp "$bin" "$dest/"
  if readelf -d "$bin" | grep -q 'NEEDED.*libllama'; then
    local out
    out=$(sys_out_dir "$release")
    [ -n "$out" ] || { log "dynamic build but no llama.cpp shared libraries under $release/build"; exit 1; }
    log "llama.cpp libraries from $out"
    if [ -d "$out/backends" ]; then
      cp -L "$out"/backends/*.so "$dest/"
    fi
    # The llama.cpp libraries the binary and the backends need, transitively, under the names they ask
    # for (libllama.so.0, ...), links resolved; nothing else (the build also makes an unused libllama-common).
    local changed=1 lib name
    while [ "$changed" = 1 ]; do
      changed=0
      for lib in "$dest"/*; do
        for name in $(readelf -d "$lib" | sed -n 's/.*NEEDED.*\[\(lib\(llama\|ggml\)[^]]*\)\]/\1/p'); do
          if [ ! -e "$dest/$name" ]; then cp -L "$out/lib/$name" "$dest/$name"; changed=1; fi
        done
      done
    done
  else
    log "llama.cpp is linked into the binary (no dynamic-backends): nothing else to stage"
  fi
  # llama.cpp's libraries carry full debug info (half their size); the Rust binary keeps its line tables.
  if command -v strip > /dev/null 2>&1 && compgen -G "$dest/*.so*" > /dev/null; then
    strip --strip-debug "$dest"/*.so*
  fi
  log "staged: $(find "$dest" -maxdepth 1 -type f -printf '%f\n' | sort | tr '\n' ' ')"
  # The staged tree must be self-contained: run it with its own folder only.
  LD_LIBRARY_PATH=$dest "$dest/llama-scorer" --version
  LD_LIBRARY_PATH=$dest "$dest/llama-scorer" --backends-dir "$dest" devices
  echo
}

cmd_runtime_deps() {
  local need=()
  ldconfig -p | grep -q 'libgomp.so.1' || need+=(libgomp1)
  ldconfig -p | grep -q 'libstdc++.so.6' || need+=(libstdc++6)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  dpkg -s ca-certificates >/dev/null 2>&1 || need+=(ca-certificates)
  apt_install "${need[@]}"
}

cmd_smoke() {
  local dest=${1:?smoke DEST MODEL} model=${2:?smoke DEST MODEL}
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  local url=http://127.0.0.1:$port serve_log
  serve_log=$(mktemp)
  LD_LIBRARY_PATH=$dest LLAMA_SCORER_BACKENDS_DIR=$dest \
    "$dest/llama-scorer" serve --model "$model" --alias smoke --host 127.0.0.1 --port "$port" > "$serve_log" 2>&1 &
  local pid=$!
  local ok=""
  for _ in $(seq 1 120); do
    # The image's HEALTHCHECK command.
    if curl -fsS "$url/health" > /dev/null 2>&1; then ok=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if [ -z "$ok" ]; then
    kill "$pid" 2>/dev/null || true
    cat "$serve_log" >&2
    log "smoke: /health never answered"
    exit 1
  fi
  local ready scored rc=0
  ready=$(curl -fsS "$url/ready")
  scored=$(curl -fsS "$url/v1/logprobs" -H 'Content-Type: application/json' \
    -d '{"model": "smoke", "prompt": "The capital of France is", "response": " Paris."}') || rc=$?
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  grep -E 'llama.cpp backends loaded|device|model loaded' "$serve_log" >&2 || true
  rm -f "$serve_log"
  [ "$rc" = 0 ] || { log "smoke: /v1/logprobs failed"; exit 1; }
  python3 - "$ready" "$scored" <<'PY'
import json, sys
ready, scored = json.loads(sys.argv[1]), json.loads(sys.argv[2])
devices = [m["device"] for m in ready["models"]]
assert devices and all(devices), ready
lp = scored["data"][0]["logprob"]
assert isinstance(lp, float) and lp < 0, scored
print(f"[docker-build] smoke: healthy; devices {devices}; logprob {lp:.4f}", file=sys.stderr)
PY
}

case "${1:-}" in
  deps) cmd_deps ;;
  build) shift; cmd_build "$@" ;;
  stage) shift; cmd_stage "$@" ;;
  runtime-deps) cmd_runtime_deps ;;
  smoke) shift; cmd_smoke "$@" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
