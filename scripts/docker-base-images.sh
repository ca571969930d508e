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
# With --cuda, also the two bases of docker/Dockerfile.cuda, from Debian's own CUDA toolkit (bookworm `non-free`,
# CUDA 11.8: sm_50 to sm_90). There is no official image of that toolkit to pose as, so these carry names of
# their own and docker/Dockerfile.cuda is pointed at them with build arguments (scripts/cuda-image.sh):
#
#   llama-scorer-base/cuda:11.8-devel-bookworm     debian:bookworm-slim + nvidia-cuda-toolkit (nvcc 11.8 with
#                                                  its g++ 11 host compiler, cudart, cuBLAS headers and libraries)
#   llama-scorer-base/cuda:11.8-runtime-bookworm   debian:bookworm-slim + the CUDA 11.8 runtime libraries only
#                                                  (libcudart, libcublas, libcublasLt); like nvidia/cuda's runtime
#                                                  images it has no driver (libcuda): the NVIDIA container toolkit
#                                                  mounts the host's at `docker run --gpus`
#
#   scripts/docker-base-images.sh --cuda [--force]
#   scripts/docker-base-images.sh --print-cuda-bases     (their two names; builds nothing)
#
# Needs root (debootstrap, chroot) and the debootstrap package; the Debian mirror is $DEBIAN_MIRROR.
set -euo pipefail

log() { echo "[base-images] $*" >&2; }

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
WORK=${BASE_IMAGES_WORK:-/var/tmp/llama-scorer-base-images}
FORCE=0
CUDA=0
for arg in "$@"; do
  case $arg in
    --force) FORCE=1 ;;
    --cuda) CUDA=1 ;;
    --print-cuda-bases) PRINT=1 ;;
    *) sed -n '2,32p' "$0" >&2; exit 2 ;;
  esac
done
# The stand-in CUDA bases (see above); scripts/cuda-image.sh passes these names to docker/Dockerfile.cuda.
CUDA_DEVEL_IMAGE=llama-scorer-base/cuda:11.8-devel-$SUITE
CUDA_RUNTIME_IMAGE=llama-scorer-base/cuda:11.8-runtime-$SUITE
# --print-cuda-bases: just the two names, devel then runtime (what scripts/cuda-image.sh builds FROM).
if [ "${PRINT:-0}" = 1 ]; then
  echo "$CUDA_DEVEL_IMAGE $CUDA_RUNTIME_IMAGE"
  exit 0
fi

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

# An image FROM debian:$SUITE-slim with Debian's contrib and non-free components and the packages $2... ($1 tag;
# the build reaches the mirror as the host does, --network host; its log goes to $WORK). This machine's local
# certificate authorities go in too, as into the Rust image, so that cargo in a builder FROM it reaches crates.io.
build_on_slim() {
  local tag=$1 start logfile ctx
  shift
  logfile=$WORK/$(echo "$tag" | tr '/:' '__').log
  ctx=$WORK/context-$(echo "$tag" | tr '/:' '__')
  log "building $tag (apt-get install $*; log: $logfile)"
  start=$(date +%s)
  rm -rf "$ctx" && mkdir -p "$ctx/local-ca"
  if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ctx/local-ca/"
  fi
  printf '%s\n' \
    "FROM debian:$SUITE-slim" \
    "RUN rm -f /etc/apt/sources.list.d/debian.sources \\" \
    " && echo 'deb $MIRROR $SUITE main contrib non-free non-free-firmware' > /etc/apt/sources.list \\" \
    " && apt-get update -qq \\" \
    " && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $* > /dev/null \\" \
    " && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb" \
    "COPY local-ca/ /usr/local/share/ca-certificates/" \
    "RUN update-ca-certificates > /dev/null" \
    > "$ctx/Dockerfile"
  docker build --network host -t "$tag" "$ctx" > "$logfile" 2>&1 || { tail -30 "$logfile" >&2; exit 1; }
  rm -rf "$ctx"
  log "built $tag in $(($(date +%s) - start)) s: $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}')"
}

# nvidia-cuda-toolkit brings nvcc 11.8 and nvidia-cuda-dev (cudart, cuBLAS, the driver API's link stub);
# nvidia-cuda-toolkit-gcc the host compiler this nvcc supports (g++ 11; bookworm's default g++ 12 is too new).
CUDA_DEVEL_PACKAGES=(nvidia-cuda-toolkit nvidia-cuda-toolkit-gcc ca-certificates)
# What libggml-cuda.so needs at run time besides the driver.
CUDA_RUNTIME_PACKAGES=(libcudart11.0 libcublas11 libcublaslt11 ca-certificates)

build_cuda() {
  if have_image "$CUDA_DEVEL_IMAGE"; then log "$CUDA_DEVEL_IMAGE present"; else
    build_on_slim "$CUDA_DEVEL_IMAGE" "${CUDA_DEVEL_PACKAGES[@]}"
    docker run --rm "$CUDA_DEVEL_IMAGE" nvcc --version | tail -2 >&2
  fi
  if have_image "$CUDA_RUNTIME_IMAGE"; then log "$CUDA_RUNTIME_IMAGE present"; else
    build_on_slim "$CUDA_RUNTIME_IMAGE" "${CUDA_RUNTIME_PACKAGES[@]}"
  fi
}

command -v docker > /dev/null 2>&1 || { log "docker not found"; exit 1; }
mkdir -p "$WORK"
rust_version=$(rustc --version | awk '{print $2}')
if have_image "debian:$SUITE-slim" && have_image "rust:$rust_version-bookworm" && have_image "rust:${rust_version%.*}-bookworm"; then
  log "base images present"
else
  ensure_debootstrap
  build_debian_slim
  build_rust
fi
[ "$CUDA" = 0 ] || build_cuda
log "done: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^(debian|rust|llama-scorer-base/cuda):" | tr '\n' ' ')"
