#!/usr/bin/env python3
"""The request-budget measurements: each hostile shape sent to a fresh `serve` of the SmolLM2 test model,
with its status, time, the server's peak resident memory and the slowest `/health` while it ran.

    scripts/budget-measure.py [--binary target/release/llama-scorer] [--cap 120] [SHAPE ...]

Shapes: finding1 (200 prompts x n 16 x 16 long stops), models (two 150k-name `models` lists at once),
prompt8m (an 8 MiB prompt), largest-completions and largest-logprobs (the largest answers the default
limits allow, computed once thanks to the response cache). Standard library only; loopback only.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def health_ms(base):
    t = time.monotonic()
    try:
        urllib.request.urlopen(base + "/health", timeout=30).read()
    except Exception:
        return 30_000.0
    return (time.monotonic() - t) * 1e3


def post(base, path, body, cap):
    data = json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"content-type": "application/json"})
    t = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=cap) as r:
            status, n = r.status, len(r.read())
    except urllib.error.HTTPError as e:
        status, n = e.code, len(e.read())
    except Exception as e:  # the cap: no answer in time
        status, n = f"none ({type(e).__name__})", 0
    return status, time.monotonic() - t, len(data), n


def shapes():
    stops = [str(i) * 1000 for i in range(16)]
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 60  # ~600 tokens
    return {
        "finding1": [("/v1/completions", {
            "model": "smol", "prompt": [f"p{i} " * 240 for i in range(200)], "n": 16,
            "stop": stops, "max_tokens": 16})],
        "models": [("/v1/logprobs", {
            "models": [f"policy-{i}" for i in range(150_000)], "prompt": "a", "response": "b"})] * 2,
        "prompt8m": [("/v1/completions", {
            "model": "smol", "prompt": "The quick brown fox jumps over the lazy dog. " * ((8 << 20) // 46),
            "max_tokens": 1})],
        # 256 echoed prompts x ~600 tokens x (1 + 5 alternatives) ~ 0.9M entries: under the 2^20 cap.
        "largest-completions": [("/v1/completions", {
            "model": "smol", "prompt": [long_prompt] * 256, "echo": True, "max_tokens": 0, "logprobs": 5})],
        # 256 items x ~190 tokens x (1 + 20 alternatives) ~ 1.0M entries: under the 2^20 cap.
        "largest-logprobs": [("/v1/logprobs", {
            "model": "smol", "items": [{"prompt": "a", "response": long_prompt[:850]}] * 256,
            "echo": False, "top_logprobs": 20})],
    }


def measure(binary, name, requests, cap):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as d:
        config = os.path.join(d, "config.yaml")
        with open(config, "w") as f:
            f.write(f"server:\n  threads: 2\npolicies:\n  smol: {{model: {MODEL}}}\n")
        proc = subprocess.Popen([binary, "serve", "--config", config, "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while health_ms(base) >= 30_000:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            start_rss = rss_kib(proc.pid)
            stop = threading.Event()
            seen = {"rss": start_rss, "health": 0.0}

            def watch():
                while not stop.is_set():
                    seen["rss"] = max(seen["rss"], rss_kib(proc.pid))
                    seen["health"] = max(seen["health"], health_ms(base))
                    time.sleep(0.05)

            w = threading.Thread(target=watch)
            w.start()
            results = [None] * len(requests)

            def send(i, path, body):
                results[i] = post(base, path, body, cap)

            threads = [threading.Thread(target=send, args=(i, p, b)) for i, (p, b) in enumerate(requests)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            stop.set()
            w.join()
            alive = proc.poll() is None
            for status, secs, sent, got in results:
                print(f"{name}: status {status} in {secs:.2f} s (body {sent / 1e3:.0f} KB, answer "
                      f"{got / 2**20:.1f} MiB); RSS {start_rss >> 10} -> peak {seen['rss'] >> 10} MiB; "
                      f"/health max {seen['health']:.0f} ms; alive {alive}", flush=True)
        finally:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "llama-scorer"))
    ap.add_argument("--cap", type=float, default=120, help="seconds to wait for an answer")
    ap.add_argument("shapes", nargs="*")
    args = ap.parse_args()
    all_shapes = shapes()
    for name in args.shapes or list(all_shapes):
        measure(args.binary, name, all_shapes[name], args.cap)


if __name__ == "__main__":
    sys.exit(main())
