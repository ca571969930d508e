#!/usr/bin/env python3
"""Start-up, memory and scoring figures of one big GGUF model on this machine's CPU, through the real server.

For a Llama-3-8B-shaped file (scripts/gpu/gen_model.py writes one with random weights) it measures, each from a
fresh `llama-scorer serve` process:

  cold      digest cache empty: the whole file is hashed while llama.cpp loads it (mapped)
  cached    the same file again: the digest comes from the verified cache
  replaced  the file copied and renamed over itself (new inode, same bytes): hashed again
  no-mmap   --no-mmap (read into memory), digest cached

and per start: seconds until /health answers, until /ready is 200, until the first answer; resident memory
after it; the load and hash lines of the log. Then, on the last server: scored tokens/s of a plain request, the
same with `top_logprobs: 20`, and the answer sizes. The file's SHA-256 rate is timed with sha256sum too (page
cache warm). Needs only the standard library; prints JSON and a Markdown table.

  scripts/bench-big-model.py --model /var/tmp/m8b.gguf [--binary target/release/llama-scorer] [--threads 2]
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def post(url, body, timeout=3600):
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{url}: {e.code} {e.read()[:500]!r}") from e
    return time.monotonic() - started, raw


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


# The synthetic vocabulary is byte-level (about one token per byte) and has no token for " t" (its one merge's
# result is missing), so no word here starts with "t": ~115 prompt and ~115 response tokens.
PROMPT = ("A model scores each word of every response given its prompt exactly once and its numbers never "
          "change with load or batch size.")
RESPONSE = (" Each word of every response is scored given its prompt on any device, and a policy gradient "
            "needs all of its numbers.")
assert " t" not in PROMPT + RESPONSE


def start(args, cache_dir, extra, log_path):
    port = free_port()
    env = dict(os.environ, LLAMA_SCORER_CACHE_DIR=cache_dir, RUST_LOG="info")
    cmd = [args.binary, "serve", "--model", args.model, "--alias", "big", "--port", str(port),
           "--threads", str(args.threads), "--cache-bytes", "0", "--prefix-cache-bytes", "0", *extra]
    log = open(log_path, "w")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    health = ready = None
    while ready is None:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}; see {log_path}")
        if health is None and get(base + "/health", 1)[0] == 200:
            health = time.monotonic() - started
        if get(base + "/ready", 1)[0] == 200:
            ready = time.monotonic() - started
            health = health or ready
        time.sleep(0.05)
    return proc, base, started, health, ready


def log_lines(path):
    keep = ("model file hashed", "model digest from the cache", "model loaded", "digest is not cached")
    with open(path) as f:
        return [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in f if any(k in line for k in keep)]


def scored_tokens(answer):
    return answer["usage"]["completion_tokens"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--binary", default="target/release/llama-scorer")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="target/big-model")
    ap.add_argument("--runs", default="cold,cached,replaced,no-mmap", help="which starts, in order")
    ap.add_argument("--answer-runs", default="cold,cached,replaced,no-mmap",
                    help="starts that also time a first answer (on a slow CPU each costs minutes)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    size_gib = os.path.getsize(args.model) / 2**30
    results = {"model": args.model, "size_gib": round(size_gib, 3), "threads": args.threads, "starts": {}}

    t = time.monotonic()
    subprocess.run(["sha256sum", args.model], check=True, stdout=subprocess.DEVNULL)
    sha_s = time.monotonic() - t
    results["sha256sum_s"] = round(sha_s, 2)
    results["sha256sum_mib_per_s"] = round(size_gib * 1024 / sha_s)

    cache_dir = tempfile.mkdtemp(prefix="digest-cache-")
    body = {"model": "big", "prompt": PROMPT, "response": RESPONSE}
    extras = {"cold": [], "cached": [], "replaced": [], "no-mmap": ["--no-mmap"]}
    answer_runs = args.answer_runs.split(",")
    for name in args.runs.split(","):
        extra = extras[name]
        if name == "replaced":
            t = time.monotonic()
            tmp = args.model + ".replacing"
            shutil.copyfile(args.model, tmp)
            os.replace(tmp, args.model)
            results["replace_copy_s"] = round(time.monotonic() - t, 1)
        log_path = os.path.join(args.out, f"serve-{name}.log")
        proc, base, started, health, ready = start(args, cache_dir, extra, log_path)
        try:
            run = {"health_s": round(health, 2), "ready_s": round(ready, 2), "rss_mib_ready": round(rss_mib(proc.pid))}
            if name in answer_runs:
                first_s, raw = post(base + "/v1/logprobs", body)
                run["first_answer_s"] = round(time.monotonic() - started, 2)
                run["first_request_s"] = round(first_s, 2)
            run["rss_mib"] = round(rss_mib(proc.pid))
            run["log"] = log_lines(log_path)
            if name == "no-mmap":
                answer = json.loads(raw)
                n = scored_tokens(answer)
                plain_s, plain = post(base + "/v1/logprobs", body)
                top_s, top = post(base + "/v1/logprobs", dict(body, top_logprobs=20))
                results["scoring"] = {
                    "scored_tokens": n,
                    "plain_s": round(plain_s, 2), "plain_tokens_per_s": round(n / plain_s, 2),
                    "plain_bytes": len(plain),
                    "top20_s": round(top_s, 2), "top20_tokens_per_s": round(n / top_s, 2),
                    "top20_bytes": len(top),
                    "usage": answer.get("usage"),
                }
            results["starts"][name] = run
        finally:
            proc.terminate()
            proc.wait(timeout=120)
        print(json.dumps({name: results["starts"][name]}, indent=1), file=sys.stderr)
    shutil.rmtree(cache_dir, ignore_errors=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))
    print("\n| start | /health s | /ready s | first answer s | RSS MiB |\n|---|---:|---:|---:|---:|")
    for name, r in results["starts"].items():
        print(f"| {name} | {r['health_s']} | {r['ready_s']} | {r.get('first_answer_s', '-')} | {r['rss_mib']} |")


if __name__ == "__main__":
    main()
