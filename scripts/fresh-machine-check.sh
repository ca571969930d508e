#!/usr/bin/env bash
# The README's first command on a fresh Debian machine, as a new user runs it: a container of the Rust image
# (Debian bookworm + rustup's Rust, no cmake, clang or libclang), a non-root user with sudo, a copy of this
# checkout without build outputs or models, then `make serve`; passes when the served default model scores.
# Not part of `make test` (it builds llama.cpp from cold: ~10 min on 2 cores): `make fresh-machine-check`.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-rust:1.95-bookworm}
scripts/docker-base-images.sh
name=llama-scorer-fresh-$$
trap 'docker rm -f "$name" > /dev/null 2>&1 || true' EXIT
git ls-files -z | tar --null -T - -cf target/fresh-checkout.tar

docker run -d --name "$name" --network host "$IMAGE" sleep infinity > /dev/null
docker cp target/fresh-checkout.tar "$name:/tmp/checkout.tar"
docker exec "$name" sh -c '
  set -e
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sudo > /dev/null
  useradd -m newuser && echo "newuser ALL=(ALL) NOPASSWD:ALL" > /etc/sudoers.d/newuser
  mkdir /home/newuser/llama-scorer && tar -C /home/newuser/llama-scorer -xf /tmp/checkout.tar
  chown -R newuser: /home/newuser/llama-scorer
  for p in cmake clang libclang-dev; do ! dpkg -s "$p" > /dev/null 2>&1 || { echo "$p is already here"; exit 1; }; done'
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start=$(date +%s)
docker exec -d -u newuser -w /home/newuser/llama-scorer "$name" sh -c "make serve PORT=$port > /tmp/serve.log 2>&1"
for _ in $(seq 1 1800); do
  curl -fsS "http://127.0.0.1:$port/health" > /dev/null 2>&1 && break
  docker exec "$name" pgrep -f 'make serve' > /dev/null || { docker exec "$name" tail -40 /tmp/serve.log; exit 1; }
  sleep 1
done
curl -fsS "http://127.0.0.1:$port/v1/logprobs" \
  -d '{"model": "smollm2-135m-instruct", "prompt": "The capital of France is", "response": " Paris."}'
echo
echo "[fresh-machine-check] make serve as a new user with sudo: serving after $(($(date +%s) - start)) s"
docker exec "$name" grep -E '^\[setup\]' /tmp/serve.log || true
