"""Starts the real llama-scorer binary on the real test models for the Python tests."""

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("LLAMA_SCORER_MODELS", ROOT / "models"))
BINARY = Path(os.environ.get("LLAMA_SCORER_BIN", ROOT / "target" / "release" / "llama-scorer"))
SMOL = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = MODELS / "gemma-3-270m-q4_k_m.gguf"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(args, port, name):
    """`llama-scorer serve ARGS --port PORT` (its log in the temp folder), once /health answers; stopped on
    exit."""
    log = open(Path(tempfile.gettempdir()) / f"llama-scorer-{name}-{port}.log", "w")
    proc = subprocess.Popen(
        [str(BINARY), "serve", *args, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}; see {log.name}")
        try:
            if requests.get(base + "/health", timeout=1).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("server did not start in 120 s")
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


API_KEY = "test-key"
# A policy named with the id Fireworks clients already send, served by SmolLM2.
FIREWORKS_ID = "accounts/fireworks/models/llama-v3p1-8b-instruct"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="session")
def server():
    """Base URL of a server (API key `test-key`) with policies `smol` (SmolLM2), `gemma` (Gemma 3),
    a Fireworks-style id on SmolLM2, and `smol-short` (n_ctx 64)."""
    for f in (BINARY, SMOL, GEMMA):
        if not f.exists():
            pytest.fail(f"{f} is missing: run `make build` and scripts/fetch-models.sh")
    port = _free_port()
    config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    config.write(
        f"server: {{api_keys: [{API_KEY}]}}\n"
        f"policies:\n  smol: {{model: {SMOL}}}\n  gemma: {{model: {GEMMA}}}\n"
        f"  {FIREWORKS_ID}: {{model: {SMOL}, temperature: 0.7}}\n"
        f"  smol-short: {{model: {SMOL}, n_ctx: 64}}\n"
    )
    config.close()
    with serving(["--config", config.name], port, "pytest") as base:
        yield base
    os.unlink(config.name)


def score(base, **body):
    r = requests.post(base + "/v1/logprobs", json=body, headers=AUTH, timeout=600)
    assert r.status_code == 200, r.text
    return r.json()["data"][0]
