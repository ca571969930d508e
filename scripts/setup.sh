#!/usr/bin/env bash
# Install what `make serve` / `make test` need on a Debian or Ubuntu machine, with sudo when not root.
# Each package is installed only when missing, so a prepared machine pays a few dpkg look-ups.
#
#   scripts/setup.sh build    the llama.cpp build (cmake, clang + libclang for bindgen, a C/C++ toolchain),
#                             python3-venv and unzip for fetching the test models from PyPI wheels
#   scripts/setup.sh test     build + what the tests use: shellcheck, chromium + chromium-driver (the page's
#                             browser test), debootstrap (local base images for the Docker test), the Compose tool
#                             where a Docker engine is installed without one
#
# Rust itself is not a Debian package recent enough (edition 2024): without cargo, this says how to get it.
set -euo pipefail

log() { echo "[setup] $*" >&2; }

mode=${1:-build}
case "$mode" in build | test) ;; *) sed -n '2,12p' "$0"; exit 2 ;; esac

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

need=()
want() { have_pkg "$1" || need+=("$1"); }

want cmake
want clang
want libclang-dev
want build-essential
want pkg-config
want unzip
want curl
want ca-certificates
# Python 3 with pip (fetching the models from PyPI wheels) and venv (the test clients); Debian splits them
# out, a pyenv or other non-Debian python already has them.
if ! python3 -m pip --version > /dev/null 2>&1; then want python3-pip; fi
if ! python3 -c 'import ensurepip, venv' 2> /dev/null; then want python3-venv; fi

if [ "$mode" = test ]; then
  want shellcheck
  want chromium
  want chromium-driver
  want debootstrap
  if command -v docker > /dev/null 2>&1 && ! docker compose version > /dev/null 2>&1 \
    && ! command -v docker-compose > /dev/null 2>&1; then
    want docker-compose
  fi
fi

if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get > /dev/null 2>&1; then
    log "this is not a Debian/Ubuntu machine: install these packages (or their equivalents) yourself: ${need[*]}"
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo > /dev/null 2>&1 || { log "need root or sudo to install: ${need[*]}"; exit 1; }
    sudo=(sudo)
  fi
  log "installing: ${need[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi

if ! command -v cargo > /dev/null 2>&1; then
  log "cargo not found. Install Rust (1.85 or newer) with rustup: https://rustup.rs, then rerun make."
  exit 1
fi
