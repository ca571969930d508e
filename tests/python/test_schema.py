"""Schemathesis against openapi.yaml and the running server: every operation, a fixed example count and
seed; no 5xx, every response valid against the schema (status, content type, body), invalid requests
refused. A policy with a small context keeps generated completions short."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from conftest import BINARY, ROOT, SMOL

EXAMPLES = os.environ.get("SCHEMATHESIS_EXAMPLES", "10")


def test_openapi_spec_holds_against_the_server():
    schemathesis = shutil.which("schemathesis") or str(Path(os.sys.executable).parent / "schemathesis")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    config.write(f"policies:\n  smollm2-135m-instruct: {{model: {SMOL}, n_ctx: 48}}\n")
    config.close()
    log = open(Path(tempfile.gettempdir()) / f"llama-scorer-schemathesis-{port}.log", "w")
    server = subprocess.Popen([str(BINARY), "serve", "--config", config.name, "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if requests.get(base + "/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        result = subprocess.run(
            [schemathesis, "run", str(ROOT / "openapi.yaml"), "--url", base,
             "--max-examples", EXAMPLES, "--seed", "20261127",
             "--phases", "examples,coverage,fuzzing",
             "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                         "response_schema_conformance,negative_data_rejection",
             "--request-timeout", "600", "--no-color"],
            capture_output=True, text=True, timeout=3000,
        )
        print(result.stdout[-3000:])
        assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-2000:]
        assert requests.get(base + "/health", timeout=5).ok
    finally:
        server.terminate()
        server.wait(timeout=60)
        os.unlink(config.name)
