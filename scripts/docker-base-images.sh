#!/usr/bin/env bash
# Local stand-ins for the base images the Dockerfiles name, for Docker hosts that cannot pull from a registry.
# Each is built from Debian's own packages and tagged exactly as the official image, so docker/Dockerfile stays
# what a user with a registry builds. An image already present under its tag is reused (never rebuilt).
#
#   debian:bookworm-slim   debootstrap --variant=minbase bookworm, imported (the official slim image is minbase
#                          with the same docs trimmed)
#   rust:R-bookworm        that root file system plus the build packages of the official image's base
#                          (buildpack-deps: gcc, make, git, curl, pkg-config, ...) and this machine's Rust
#                          toolchain R laid out as the official image lays it out: rustup home /usr/local/rustup,
#                          cargo home /usr/local/cargo, with its ENV (RUSTUP_HOME, CARGO_HOME, PATH, RUST_VERSION)
#
#   scripts/docker-base-images.sh [--force]      (R = the version of this machine's rustc, tagged as R and
#                                                 as its minor, e.g. rust:1.95.0-bookworm and rust:1.95-bookworm)
#
# Needs root (debootstrap, chroot) and the debootstrap package; the Debian mirror is $DEBIAN_MIRROR.
set -euo pipefail

log() { echo "[base-images] $*" >&2; }

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
WORK=${BASE_IMAGES_WORK:-/var/tmp/llama-scorer-base-images}
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

have_image() { [ "$FORCE" = 0 ] && docker image inspect "$1" > /dev/null 2>&1; }

sudo_cmd() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_debootstrap() {
  command -v debootstrap > /dev/null 2>&1 && return 0
  log "installing debootstrap"
  sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_cmd apt-get install -y -qq --no-install-recommends debootstrap
}

# A minbase root file system of $SUITE in $1 (kept under $WORK and reused between runs).
make_rootfs() {
  local dir=$1
  if [ -x "$dir/usr/bin/apt-get" ] && [ -f "$dir/.complete" ]; then return 0; fi
  sudo_cmd rm -rf "$dir"
  mkdir -p "$WORK/cache"
  log "debootstrap $SUITE into $dir"
  sudo_cmd debootstrap --variant=minbase --cache-dir="$WORK/cache" "$SUITE" "$dir" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  # As the official image: the package lists and caches are not kept; sources point at the mirror.
  sudo_cmd rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb
  sudo_cmd touch "$dir/.complete"
}

# Import a root file system as a tagged image ($1 dir, $2 tag, then --change arguments).
import_rootfs() {
  local dir=$1 tag=$2
  shift 2
  log "importing $tag"
  sudo_cmd tar --numeric-owner --exclude=./.complete -C "$dir" -c . | docker import "$@" - "$tag" > /dev/null
}

build_debian_slim() {
  local tag=debian:$SUITE-slim
  if have_image "$tag"; then log "$tag present"; return 0; fi
  make_rootfs "$WORK/slim"
  import_rootfs "$WORK/slim" "$tag" --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
}

# The packages buildpack-deps:bookworm (the official rust image's base) brings that a Rust build uses.
RUST_BASE_PACKAGES=(ca-certificates curl wget gnupg git make gcc g++ libc6-dev pkg-config libssl-dev
  dpkg-dev file patch xz-utils zlib1g-dev procps)

build_rust() {
  local version toolchain tag short
  version=$(rustc --version | awk '{print $2}')
  tag=rust:$version-bookworm
  short=rust:${version%.*}-bookworm
  if have_image "$tag" && have_image "$short"; then log "$tag present"; return 0; fi
  toolchain=$(rustc --print sysroot)
  [ -x "$toolchain/bin/cargo" ] || { log "no cargo in $toolchain"; exit 1; }
  local dir=$WORK/rust
  make_rootfs "$WORK/slim"
  sudo_cmd rm -rf "$dir"
  sudo_cmd cp -a "$WORK/slim" "$dir"
  log "installing the buildpack-deps packages into $dir"
  sudo_cmd cp /etc/resolv.conf "$dir/etc/resolv.conf"
  sudo_cmd mount -t proc proc "$dir/proc"
  trap 'sudo_cmd umount "$dir/proc" 2>/dev/null || true' EXIT
  sudo_cmd chroot "$dir" /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${RUST_BASE_PACKAGES[*]} > /dev/null && rm -rf /var/lib/apt/lists/*"
  # This machine's local certificate authorities (e.g. a TLS-intercepting egress proxy's), so that cargo in the
  # builder reaches crates.io through the same network as the host does. A host without any adds nothing.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
    log "adding this machine's local CA certificates: $(cd /usr/local/share/ca-certificates && echo *.crt)"
    sudo_cmd cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
    sudo_cmd chroot "$dir" update-ca-certificates > /dev/null
  fi
  sudo_cmd umount "$dir/proc"
  trap - EXIT
  sudo_cmd rm -f "$dir/etc/resolv.conf"
  # The official layout: toolchain under /usr/local/rustup, rustup and its proxies under /usr/local/cargo/bin.
  local name=$version-x86_64-unknown-linux-gnu
  log "laying out Rust $version (from $toolchain) under /usr/local/rustup and /usr/local/cargo"
  sudo_cmd mkdir -p "$dir/usr/local/rustup/toolchains/$name" "$dir/usr/local/cargo/bin"
  sudo_cmd tar -C "$toolchain" --exclude=./share/doc --exclude=./share/html -c . | sudo_cmd tar -C "$dir/usr/local/rustup/toolchains/$name" -x
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$name" | sudo_cmd tee "$dir/usr/local/rustup/settings.toml" > /dev/null
  local rustup proxy
  rustup=$(command -v rustup)
  sudo_cmd cp -L "$rustup" "$dir/usr/local/cargo/bin/rustup"
  for proxy in cargo rustc rustdoc cargo-fmt rustfmt cargo-clippy clippy-driver rust-gdb rust-lldb; do
    sudo_cmd ln -f "$dir/usr/local/cargo/bin/rustup" "$dir/usr/local/cargo/bin/$proxy"
  done
  sudo_cmd chmod -R a+w "$dir/usr/local/rustup" "$dir/usr/local/cargo"
  import_rootfs "$dir" "$tag" \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV RUST_VERSION=$version" \
    --change 'CMD ["bash"]'
  docker tag "$tag" "$short"
  docker run --rm "$tag" cargo --version > /dev/null || { log "$tag: cargo does not run"; exit 1; }
  sudo_cmd rm -rf "$dir"
}

command -v docker > /dev/null 2>&1 || { log "docker not found"; exit 1; }
rust_version=$(rustc --version | awk '{print $2}')
if have_image "debian:$SUITE-slim" && have_image "rust:$rust_version-bookworm" && have_image "rust:${rust_version%.*}-bookworm"; then
  log "base images present"
  exit 0
fi
ensure_debootstrap
build_debian_slim
build_rust
log "done: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(debian|rust):' | tr '\n' ' ')"
