#!/usr/bin/env bash
# Shared by the scripts that build images (sourced, not run): `docker build` with BuildKit, whichever way this
# host offers it.
#
# The Dockerfiles' cache mounts need BuildKit: `docker buildx` where installed, else a Docker client with
# BuildKit built in (20.10, Debian's docker.io) and DOCKER_BUILDKIT=1.

# docker build ARGS... with BuildKit; fails with a message naming the missing plugin when there is none.
docker_build() {
  if docker buildx version > /dev/null 2>&1; then
    docker build "$@"
    return
  fi
  local client version
  for client in docker /usr/bin/docker; do
    version=$("$client" version --format '{{.Client.Version}}' 2> /dev/null) || continue
    case $version in
      19.03.* | 20.10.* | 21.* | 22.*)
        DOCKER_BUILDKIT=1 "$client" build "$@"
        return
        ;;
    esac
  done
  echo "no BuildKit: this Docker client needs the buildx plugin (Debian/Ubuntu: docker-buildx)" >&2
  return 1
}
