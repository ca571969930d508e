"""The CUDA image on a host without a GPU (scripts/docker-test-cuda.sh builds or finds llama-scorer:cuda first).

The image must start, say plainly that it found no GPU, serve on the CPU, and answer exactly as the host binary
(and the CPU image, where one is present) with the same CPU variant pinned; `llama-scorer devices` runs inside it;
docker/compose.gpu.yaml names it and asks for a GPU, which a host without the NVIDIA runtime refuses clearly.
"""

import json
import os
import subprocess
import time

import pytest
import requests

from test_image import (  # noqa: F401 (host_answers is a fixture)
    HOST_BUILD_VARIANT,
    MODEL_FILE,
    MODELS,
    ROOT,
    compose_cmd,
    docker,
    fingerprint_parts,
    free_port,
    host_answers,
    running,
    score_all,
    wait_http,
)

CUDA_IMAGE = os.environ.get("CUDA_IMAGE", "llama-scorer:cuda")
CPU_IMAGE = os.environ.get("CPU_IMAGE", "llama-scorer:cpu")
PREFIX = f"ls-cuda-test-{os.getpid()}"

# `make docker-test` collects this folder too: without the CUDA image (a long build of its own, make cuda-image)
# these tests are skipped, saying why.
if subprocess.run(["docker", "image", "inspect", CUDA_IMAGE], capture_output=True).returncode != 0:
    pytest.skip(f"{CUDA_IMAGE} is not present (make cuda-image builds it)", allow_module_level=True)
NO_GPU = "GPU backend present but no GPU device found"


def run(image, name, *extra):
    port = free_port()
    docker("rm", "-f", name, check=False)
    docker(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
        "-v", f"{MODELS}:/models:ro", "-v", f"{ROOT / 'docker' / 'config'}:/config:ro",
        *extra, image,
    )
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    wait_http(f"{base}/health", 300, alive=lambda: running(name))
    wait_http(f"{base}/ready", 300, alive=lambda: running(name))
    return base, time.monotonic() - started


@pytest.fixture(scope="module")
def cuda_container():
    name = f"{PREFIX}-main"
    try:
        base, seconds = run(CUDA_IMAGE, name, "-e", f"LLAMA_SCORER_CPU_VARIANT={HOST_BUILD_VARIANT}")
        print(f"\n[docker-test-cuda] {CUDA_IMAGE}: /ready answered {seconds:.1f} s after docker run")
        yield name, base
    finally:
        docker("rm", "-f", name, check=False)


def test_starts_says_it_found_no_gpu_and_serves_on_the_cpu(cuda_container):
    name, base = cuda_container
    logs = docker("logs", name)
    text = logs.stdout + logs.stderr
    assert NO_GPU in text and "falling back to CPU" in text, text[-3000:]
    assert "libggml-cuda.so" in text, "the warning names the GPU backend it could not use"
    ready = requests.get(f"{base}/ready", timeout=10).json()
    assert ready["ready"] is True
    [model] = ready["models"]
    assert model["path"] == f"/models/{MODEL_FILE}" and model["device"] == "CPU", model
    assert model["offloaded_layers"] == 0
    assert ready["cpu_variant"] == HOST_BUILD_VARIANT
    assert all("CUDA" not in d["name"] for d in ready["devices"]), ready["devices"]
    # The backend is in the image beside the CPU variants: it is the host that has no GPU.
    files = docker("exec", name, "ls", "/opt/llama-scorer").stdout.split()
    assert "libggml-cuda.so" in files and f"libggml-cpu-{HOST_BUILD_VARIANT}.so" in files, files


def test_scores_equal_the_host_binary_and_the_cpu_image_bit_for_bit(cuda_container, host_answers):
    _, base = cuda_container
    in_cuda = score_all(base)
    # json.dumps of floats is their shortest round-trip repr: equal strings = equal f64 bits.
    assert json.dumps(in_cuda, sort_keys=True) == json.dumps(host_answers, sort_keys=True)
    values = [item["logprob"] for answer in in_cuda for item in answer]
    assert len(values) == 5 and all(v < 0 for v in values) and len(set(values)) == 5
    parts = fingerprint_parts(base)
    assert parts["device"] == "CPU" and parts["cpu_variant"] == HOST_BUILD_VARIANT
    assert "cuda" in parts["llama_cpp"], "the fingerprint names the CUDA build"
    if docker("image", "inspect", CPU_IMAGE, check=False).returncode != 0:
        print(f"\n[docker-test-cuda] {CPU_IMAGE} not present: compared with the host binary only "
              "(make docker-test holds the CPU image to the same answers)")
        return
    name = f"{PREFIX}-cpu"
    try:
        cpu_base, _ = run(CPU_IMAGE, name, "-e", f"LLAMA_SCORER_CPU_VARIANT={HOST_BUILD_VARIANT}")
        in_cpu = score_all(cpu_base)
        assert json.dumps(in_cuda, sort_keys=True) == json.dumps(in_cpu, sort_keys=True)
        print(f"\n[docker-test-cuda] bit-identical to {CPU_IMAGE} and the host binary")
    finally:
        docker("rm", "-f", name, check=False)


def test_devices_inside_the_image():
    out = docker("run", "--rm", CUDA_IMAGE, "devices", check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "CPU" in out.stdout, out.stdout
    assert NO_GPU in text, text
    print(f"\n[docker-test-cuda] llama-scorer devices:\n{out.stdout.strip()}")


def test_compose_gpu_override_names_the_cuda_image_and_asks_for_a_gpu():
    port = free_port()
    env = dict(os.environ, MODELS_DIR=str(MODELS), PORT=str(port), COMPOSE_PROJECT_NAME=f"{PREFIX}-compose")
    compose = [*compose_cmd(), "-f", str(ROOT / "docker" / "compose.yaml"),
               "-f", str(ROOT / "docker" / "compose.gpu.yaml")]
    config = subprocess.run([*compose, "config"], env=env, capture_output=True, text=True)
    assert config.returncode == 0, config.stderr
    assert "image: llama-scorer:cuda" in config.stdout and "driver: nvidia" in config.stdout, config.stdout
    runtimes = docker("info", "-f", "{{json .Runtimes}}").stdout
    up = subprocess.run([*compose, "up", "-d", "--no-build"], env=env, capture_output=True, text=True)
    try:
        if "nvidia" in runtimes:
            assert up.returncode == 0, up.stderr
            wait_http(f"http://127.0.0.1:{port}/ready", 300)
            return
        # No NVIDIA runtime here: the GPU reservation cannot be met, and Docker says which driver is missing.
        assert up.returncode != 0, "a GPU reservation was met on a host without the NVIDIA runtime"
        assert "nvidia" in up.stderr, up.stderr
        print(f"\n[docker-test-cuda] compose with the GPU override on this host: {up.stderr.strip()[-300:]}")
    finally:
        subprocess.run([*compose, "down", "--remove-orphans"], env=env, capture_output=True, text=True)
