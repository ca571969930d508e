#!/usr/bin/env python3
"""Throughput of llama-scorer over HTTP against the engine alone, on the same items, in one run.

Modes (each timed `--rounds` times, interleaved round-robin so that machine noise hits all alike; the
table shows medians):
  engine alone      the same llama_decode calls, same schedule, logits at the same positions, nothing else
  engine + scoring  in-process: queue, inference thread, log-softmax (no HTTP)
  HTTP c=N          llama-scorer serving /v1/logprobs, N concurrent clients, one item per request
  HTTP batch        one client, all items in `items` batches of 16

Usage: scripts/bench.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf [--items 32] [--threads N]
"""

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / "target" / "release" / "llama-scorer"

WORDS = (
    "the model policy score token response prompt evaluation weight importance sample data "
    "research result measure value random value answer question system context language "
    "number average estimate error bound simple method between because which would there"
).split()


def make_items(n, seed=7):
    rng = random.Random(seed)
    items = []
    for i in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 120)))
        response = " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 120)))
        items.append({"prompt": f"Question {i}: {prompt}?\nAnswer:", "response": response})
    return items


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_round(base, model, items, concurrency, batch):
    session = requests.Session()

    def send(chunk):
        r = session.post(f"{base}/v1/logprobs", json={"model": model, "items": chunk}, timeout=3600)
        r.raise_for_status()
        return sum(d["response_tokens"] for d in r.json()["data"])

    chunks = [items[i : i + batch] for i in range(0, len(items), batch)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        scored = sum(pool.map(send, chunks))
    return time.perf_counter() - started, scored


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--concurrency", default="1,4")
    args = ap.parse_args()

    items = make_items(args.items)
    workdir = Path(tempfile.mkdtemp(prefix="llama-scorer-bench-"))
    items_file = workdir / "items.jsonl"
    items_file.write_text("".join(json.dumps(i) + "\n" for i in items))

    port = free_port()
    log = open(workdir / "server.log", "w")
    server = subprocess.Popen(
        [str(BINARY), "serve", "--model", args.model, "--alias", "bench", "--port", str(port),
         "--threads", str(args.threads)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if requests.get(base + "/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        http_round(base, "bench", items[:2], 1, 1)  # warm-up
        levels = [int(c) for c in args.concurrency.split(",")]
        times = {"engine alone": [], "engine + scoring": []}
        for c in levels:
            times[f"HTTP c={c}"] = []
        times["HTTP batch of 16"] = []
        scored = decoded = None
        for _ in range(args.rounds):
            out = subprocess.run(
                [str(BINARY), "bench-engine", "--model", args.model, "--items", str(items_file),
                 "--threads", str(args.threads), "--repeat", "1"],
                check=True, capture_output=True, text=True,
            )
            rep = json.loads(out.stdout)
            scored, decoded = rep["scored_tokens"], rep["decoded_tokens"]
            times["engine alone"] += rep["decode_only_s"]
            times["engine + scoring"] += rep["engine_s"]
            for c in levels:
                t, n = http_round(base, "bench", items, c, 1)
                assert n == scored, (n, scored)
                times[f"HTTP c={c}"].append(t)
            t, n = http_round(base, "bench", items, 1, 16)
            assert n == scored
            times["HTTP batch of 16"].append(t)
    finally:
        server.terminate()
        server.wait(timeout=60)

    ceiling = statistics.median(times["engine alone"])
    print(f"\n{args.items} items, {scored} scored tokens ({decoded} decoded) per pass, "
          f"{args.threads} threads, medians of {args.rounds} interleaved rounds; model {Path(args.model).name}\n")
    print(f"| mode | seconds | scored tokens/s | decoded tokens/s | × engine alone |")
    print(f"|---|---:|---:|---:|---:|")
    for mode, ts in times.items():
        t = statistics.median(ts)
        print(f"| {mode} | {t:.2f} | {scored / t:,.0f} | {decoded / t:,.0f} | {ceiling / t:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
