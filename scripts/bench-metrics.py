#!/usr/bin/env python3
"""What an inference gateway's scraping costs a replica: GET /metrics at a fixed rate (the endpoint picker
scrapes every ~50 ms = 20 Hz), timing each scrape and the server process's CPU time, against the same span
with no scraping. Starts the server itself on a free port; the standard library only.

    scripts/bench-metrics.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf [--seconds 30] [--hz 20]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_seconds(pid):
    """User + system CPU seconds of a process, from /proc/PID/stat."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.read()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/llama-scorer"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--hz", type=float, default=20.0)
    args = ap.parse_args()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [args.binary, "serve", "--model", args.model, "--alias", "m", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                get(base + "/health")
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
        # Fill the histograms and counters a real replica has (every route, both kinds of work).
        for i in range(5):
            post(base + "/v1/logprobs", {"model": "m", "prompt": f"Item {i}", "response": " scored"})
            post(base + "/v1/completions", {"model": "m", "prompt": "Once", "max_tokens": 2, "seed": i})
        page = get(base + "/metrics")

        # Idle baseline: the server alone for the same span.
        c0, t0 = cpu_seconds(server.pid), time.monotonic()
        time.sleep(args.seconds)
        idle_cpu = (cpu_seconds(server.pid) - c0) / (time.monotonic() - t0)

        # Scraping at the gateway's rate.
        period = 1.0 / args.hz
        latencies = []
        c0, t0 = cpu_seconds(server.pid), time.monotonic()
        next_at = t0
        while time.monotonic() - t0 < args.seconds:
            started = time.perf_counter()
            get(base + "/metrics")
            latencies.append((time.perf_counter() - started) * 1e3)
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
        wall = time.monotonic() - t0
        scrape_cpu = (cpu_seconds(server.pid) - c0) / wall
        latencies.sort()
        report = {
            "scrapes": len(latencies),
            "rate_hz": round(len(latencies) / wall, 2),
            "page_bytes": len(page),
            "page_series": sum(1 for line in page.decode().splitlines() if line and not line.startswith("#")),
            "latency_ms_p50": round(statistics.median(latencies), 3),
            "latency_ms_p99": round(latencies[int(0.99 * (len(latencies) - 1))], 3),
            "latency_ms_max": round(latencies[-1], 3),
            "server_cpu_percent_idle": round(100 * idle_cpu, 3),
            "server_cpu_percent_scraped": round(100 * scrape_cpu, 3),
            "server_cpu_ms_per_scrape": round(1e3 * (scrape_cpu - idle_cpu) * wall / len(latencies), 3),
        }
        print(json.dumps(report, indent=2))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
