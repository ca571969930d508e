"""The CPU image, run as a user runs it (scripts/docker-test.sh builds it first).

Every check goes through the docker CLI and HTTP on a published port: the container's own HEALTHCHECK, /ready,
scores compared bit for bit with the host binary's, the user it runs as, what it writes, a clear refusal to start
on a missing model, SIGTERM with a request in flight, and `docker compose up` of docker/compose.yaml.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("IMAGE", "llama-scorer:cpu")
MODELS = Path(os.environ.get("LLAMA_SCORER_MODELS", ROOT / "models")).resolve()
BINARY = Path(os.environ.get("LLAMA_SCORER_BIN", ROOT / "target" / "release" / "llama-scorer"))
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
POLICY = "smollm2-135m-instruct"  # as docker/config/config.yaml names it
PREFIX = f"ls-docker-test-{os.getpid()}"
# The default (not dynamic-backends) host build compiles llama.cpp for AVX2/FMA/F16C/BMI2 (ggml's defaults when
# GGML_NATIVE is off): the image's variant with exactly those instructions is `haswell`. With it pinned the
# container runs the same CPU code as the host binary; left to pick, it takes the best for the host CPU.
HOST_BUILD_VARIANT = "haswell"

# Requests whose answers must be bit-identical between the container and the host binary.
REQUESTS = [
    {"model": POLICY, "prompt": "The capital of France is", "response": " Paris."},
    {
        "model": POLICY,
        "messages": [{"role": "user", "content": "Name a prime number."}],
        "response": "Seven is prime.",
        "top_logprobs": 3,
        "score_end_of_turn": True,
    },
    {
        "model": POLICY,
        "items": [
            {"prompt": "1, 2, 3,", "response": " 4, 5"},
            {"prompt": "Hello wor", "response": "ld"},
            {"prompt": "Le chat", "response": " est noir. 猫"},
        ],
        "echo": True,
    },
]


def docker(*args, check=True, **kw):
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout, alive=lambda: True):
    """Seconds until `url` answers 200, or fail after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        if not alive():
            break
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s")


def stripped(answer):
    """The numbers and tokens of an answer: everything but the per-request id, time, cache flag and fingerprint.

    The fingerprint is set aside because it names the build (the image's dynamic-backends feature and CPU
    variant, the host's linked-in CPU code), which differ by design even where the bits agree; the test on
    scores checks what it says separately.
    """
    items = answer["data"]
    for item in items:
        item.pop("cached", None)
        assert item.pop("system_fingerprint").startswith("fp_")
    return items


def fingerprint_parts(base):
    """The parts of the one loaded model's fingerprint, as /ready reports them."""
    [model] = requests.get(f"{base}/ready", timeout=10).json()["models"]
    return model["fingerprint"]


def score_all(base):
    out = []
    for body in REQUESTS:
        r = requests.post(f"{base}/v1/logprobs", json=body, timeout=120)
        assert r.status_code == 200, r.text
        out.append(stripped(r.json()))
    return out


def run_container(name, *extra, config_dir=ROOT / "docker" / "config", port=None):
    port = port or free_port()
    docker("rm", "-f", name, check=False)
    docker(
        "run", "-d", "--name", name,
        "-p", f"127.0.0.1:{port}:8080",
        "-v", f"{MODELS}:/models:ro",
        "-v", f"{config_dir}:/config:ro",
        *extra, IMAGE,
    )
    return f"http://127.0.0.1:{port}"


def running(name):
    return docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip() == "true"


@pytest.fixture(scope="module")
def container():
    name = f"{PREFIX}-main"
    started = time.monotonic()
    base = run_container(name, "-e", f"LLAMA_SCORER_CPU_VARIANT={HOST_BUILD_VARIANT}")
    try:
        up = wait_http(f"{base}/health", 300, alive=lambda: running(name))
        print(f"\n[docker-test] /health answered {up:.1f} s after docker run "
              f"({time.monotonic() - started:.1f} s including the run command)")
        yield name, base
    finally:
        logs = docker("logs", name, check=False)
        if logs.returncode == 0 and os.environ.get("DOCKER_TEST_LOGS"):
            print(logs.stdout, logs.stderr)
        docker("rm", "-f", name, check=False)


answers_fingerprint_parts = {}  # the host binary's fingerprint parts, filled by the host_answers fixture


@pytest.fixture(scope="module")
def host_answers(tmp_path_factory):
    """The host binary's answers to REQUESTS, same policy, same settings as docker/config/config.yaml."""
    cfg = tmp_path_factory.mktemp("host") / "config.yaml"
    cfg.write_text(
        f"policies:\n  {POLICY}:\n    model: {MODELS / MODEL_FILE}\n    temperature: 1.0\n    n_gpu_layers: -1\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [str(BINARY), "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 120, alive=lambda: proc.poll() is None)
        host_base = f"http://127.0.0.1:{port}"
        answers = score_all(host_base)
        answers_fingerprint_parts.update(fingerprint_parts(host_base))
        yield answers
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_healthcheck_turns_healthy(container):
    name, _ = container
    # The image's own HEALTHCHECK (curl /health every 30 s): the first probe runs 30 s after start.
    deadline = time.monotonic() + 150
    status = ""
    while time.monotonic() < deadline:
        status = docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
        if status == "healthy":
            break
        assert status in ("starting", "healthy"), status
        time.sleep(1)
    assert status == "healthy"


def test_ready_reports_the_model(container):
    _, base = container
    r = requests.get(f"{base}/ready", timeout=10)
    assert r.status_code == 200
    ready = r.json()
    assert ready["ready"] is True
    assert [m["path"] for m in ready["models"]] == [f"/models/{MODEL_FILE}"]
    assert ready["models"][0]["device"] == "CPU"
    assert ready["cpu_variant"] == HOST_BUILD_VARIANT
    models = requests.get(f"{base}/v1/models", timeout=10).json()
    assert POLICY in [m["id"] for m in models["data"]]


def test_scores_equal_the_host_binary_bit_for_bit(container, host_answers):
    _, base = container
    in_container = score_all(base)
    # json.dumps of floats is their shortest round-trip repr: equal strings = equal f64 bits.
    assert json.dumps(in_container, sort_keys=True) == json.dumps(host_answers, sort_keys=True)
    # Not vacuous: the answers hold real, distinct numbers.
    values = [item["logprob"] for answer in in_container for item in answer]
    assert len(values) == 5 and all(v < 0 for v in values) and len(set(values)) == 5
    # Same model file, schedule and scoring code on both sides; only the build's parts may differ.
    image, host = fingerprint_parts(base), answers_fingerprint_parts
    for part in ("model_sha256", "decode_chunk", "n_ctx", "scorer", "device"):
        assert image[part] == host[part], (part, image[part], host[part])
    assert image["cpu_variant"] == HOST_BUILD_VARIANT and host["cpu_variant"] is None


def test_runs_as_non_root_and_writes_nothing_outside_tmp(container):
    name, base = container
    assert docker("inspect", "-f", "{{.Config.User}}", name).stdout.strip() == "10001:10001"
    assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
    # After serving requests, the container's file system differs from the image's only under /tmp.
    requests.post(f"{base}/v1/logprobs", json=REQUESTS[0], timeout=60).raise_for_status()
    changed = [line.split(maxsplit=1)[1] for line in docker("diff", name).stdout.splitlines()]
    assert all(p == "/tmp" or p.startswith("/tmp/") for p in changed), changed


def test_read_only_root_file_system_and_the_auto_picked_cpu_variant(host_answers):
    name = f"{PREFIX}-ro"
    base = run_container(name, "--read-only", "--tmpfs", "/tmp")
    try:
        wait_http(f"{base}/health", 300, alive=lambda: running(name))
        variant = requests.get(f"{base}/ready", timeout=10).json()["cpu_variant"]
        assert variant, "the CPU variant in use is reported"
        answers = score_all(base)
        # Not asserted equal: another variant uses other instructions (AVX-512, ...). Reported instead.
        pairs = [(a["logprob"], b["logprob"]) for x, y in zip(answers, host_answers) for a, b in zip(x, y)]
        diff = max(abs(a - b) for a, b in pairs)
        same = json.dumps(answers, sort_keys=True) == json.dumps(host_answers, sort_keys=True)
        print(f"\n[docker-test] auto-picked CPU variant {variant}: bit-identical to the host build: {same}; "
              f"max |difference| of a total {diff:.3g} nats")
        if variant == HOST_BUILD_VARIANT:
            assert same
    finally:
        docker("rm", "-f", name, check=False)


def test_unknown_cpu_variant_stops_start_up_with_a_clear_message():
    name = f"{PREFIX}-variant"
    run_container(name, "-e", "LLAMA_SCORER_CPU_VARIANT=nosuch")
    try:
        code = docker("wait", name, timeout=120).stdout.strip()
        assert code != "0"
        logs = docker("logs", name)
        text = logs.stdout + logs.stderr
        assert '"nosuch" not found' in text and HOST_BUILD_VARIANT in text, text
    finally:
        docker("rm", "-f", name, check=False)


def test_missing_model_stops_start_up_with_a_clear_message(tmp_path):
    (tmp_path / "config.yaml").write_text("policies:\n  p0:\n    model: /models/missing.gguf\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / "config.yaml", 0o644)
    name = f"{PREFIX}-missing"
    run_container(name, config_dir=tmp_path)
    try:
        code = docker("wait", name, timeout=120).stdout.strip()
        assert code != "0", "the container must exit non-zero"
        logs = docker("logs", name)
        text = logs.stdout + logs.stderr
        assert "/models/missing.gguf" in text and "p0" in text, text
        print(f"\n[docker-test] exit {code}; docker logs: {text.strip()}")
    finally:
        docker("rm", "-f", name, check=False)


def test_sigterm_lets_an_in_flight_request_finish_and_exits_zero():
    name = f"{PREFIX}-stop"
    base = run_container(name)
    try:
        wait_http(f"{base}/health", 300, alive=lambda: running(name))
        items = [{"prompt": f"Story {i}: once upon a time", "response": " there was a scorer" * 2} for i in range(8)]
        result = {}

        def call():
            try:
                result["response"] = requests.post(
                    f"{base}/v1/logprobs", json={"model": POLICY, "items": items}, timeout=300
                )
            except requests.RequestException as e:  # noqa: PERF203
                result["error"] = e

        t = threading.Thread(target=call)
        t.start()
        # Proof that the work is in flight: items wait in the model's queue.
        deadline = time.monotonic() + 60
        depth = 0
        while time.monotonic() < deadline and depth == 0:
            ready = requests.get(f"{base}/ready", timeout=10).json()
            depth = ready["models"][0]["queue_depth"]
        assert depth > 0, "the batch never showed up in the queue"
        stop = docker("stop", "-t", "60", name, timeout=120)
        assert stop.returncode == 0
        t.join(timeout=120)
        if "error" in result:
            logs = docker("logs", "-t", name)
            print(logs.stdout[-3000:], logs.stderr[-3000:])
        assert "error" not in result, result.get("error")
        r = result["response"]
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert len(data) == 8 and all(d["logprob"] < 0 for d in data)
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
        print(f"\n[docker-test] SIGTERM with {depth} items queued: all 8 answered, exit 0")
    finally:
        docker("rm", "-f", name, check=False)


def compose_cmd():
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    assert shutil.which("docker-compose"), "no Compose tool (docker compose or docker-compose)"
    return ["docker-compose"]


def test_compose_up_serves_the_default_model():
    port = free_port()
    env = dict(os.environ, MODELS_DIR=str(MODELS), PORT=str(port), COMPOSE_PROJECT_NAME=f"{PREFIX}-compose")
    compose = [*compose_cmd(), "-f", str(ROOT / "docker" / "compose.yaml")]
    up = subprocess.run([*compose, "up", "-d", "--no-build"], env=env, capture_output=True, text=True)
    try:
        assert up.returncode == 0, up.stderr
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health", 300)
        ready = requests.get(f"{base}/ready", timeout=10).json()
        assert [m["path"] for m in ready["models"]] == [f"/models/{MODEL_FILE}"]
        r = requests.post(f"{base}/v1/logprobs", json=REQUESTS[0], timeout=60)
        assert r.status_code == 200 and r.json()["data"][0]["logprob"] < 0, r.text
    finally:
        down = subprocess.run([*compose, "down", "--remove-orphans"], env=env, capture_output=True, text=True)
        assert down.returncode == 0, down.stderr
