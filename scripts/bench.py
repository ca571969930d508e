#!/usr/bin/env python3
"""Throughput of llama-scorer against the engine alone and llama-cpp-python, on the same items, in one run.

Modes (the compute modes are timed `--rounds` times, interleaved round-robin so that machine noise hits all
alike; the table shows medians):
  engine alone       the same llama_decode calls, same schedule, logits at the same positions, nothing else
  engine + scoring   in-process: queue, inference thread, log-softmax (no HTTP)
  HTTP c=N           llama-scorer serving /v1/logprobs (cache and prefix reuse off), N clients, 1 item/request
  HTTP batch         one client, `items` batches of 16
  cache hits         the same requests again on a server with the cache on (latency from Server-Timing)
  arena              prompts x 4 policies (two identical, one with a system prompt, one hotter), 2 responses
                     per prompt, with cache + prefix reuse on vs off
  llama-cpp-python   the seed guide's way: Llama(logits_all=True), create_completion(prompt+response,
                     max_tokens=1, echo=True, logprobs=1) minus the prompt's own sum (needs --llama-cpp-python)

Usage: scripts/bench.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf [--items 16] [--rounds 3]
                           [--llama-cpp-python .venv-bench/bin/python] [--json out.json] [--chart out.png]
"""

import argparse
import json
import os
import random
import signal
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


def words(rng, lo, hi):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def make_items(n, seed=7):
    rng = random.Random(seed)
    return [
        {"prompt": f"Question {i}: {words(rng, 60, 120)}?\nAnswer:", "response": " " + words(rng, 60, 120)}
        for i in range(n)
    ]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A llama-scorer process; `extra` are serve flags."""

    def __init__(self, args, config_or_model, extra, log_dir):
        self.port = free_port()
        flag = ["--config", config_or_model] if config_or_model.endswith(".yaml") else [
            "--model", config_or_model, "--alias", "bench"]
        self.log = open(Path(log_dir) / f"server-{self.port}.log", "w")
        self.proc = subprocess.Popen(
            [str(BINARY), "serve", *flag, "--port", str(self.port), "--threads", str(args.threads), *extra],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(600):
            try:
                if requests.get(self.base + "/health", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def peak_rss_mib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def server_timing(header):
    """`app;dur=1.2, tokenize;dur=0.1, ...` as {"app": 1.2, "tokenize": 0.1, ...} (milliseconds)."""
    out = {}
    for entry in header.split(","):
        name, _, params = entry.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur":
                out[name] = float(value)
    return out


def http_run(base, model_for, bodies, concurrency):
    """Sends `bodies` (one request each) with `concurrency` clients. Returns (seconds, scored tokens,
    per-request latencies in ms, per-request server times in ms)."""
    session = requests.Session()

    def send(body):
        t = time.perf_counter()
        r = session.post(f"{base}/v1/logprobs", json=body, timeout=3600)
        latency = (time.perf_counter() - t) * 1e3
        r.raise_for_status()
        server_ms = server_timing(r.headers["server-timing"])["app"]
        return sum(d["response_tokens"] for d in r.json()["data"]), latency, server_ms

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(send, bodies))
    seconds = time.perf_counter() - started
    return seconds, sum(r[0] for r in results), [r[1] for r in results], [r[2] for r in results]


def item_bodies(model, items, batch):
    return [{"model": model, "items": items[i : i + batch]} for i in range(0, len(items), batch)]


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


LCP_SCRIPT = r"""
import json, sys, time
from llama_cpp import Llama
model, items_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
items = [json.loads(l) for l in open(items_path)]
llm = Llama(model_path=model, logits_all=True, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
def echo_sum(text):
    out = llm.create_completion(text, max_tokens=1, echo=True, logprobs=1, temperature=1.0)
    lp = out["choices"][0]["logprobs"]["token_logprobs"]
    return sum(float(x) for x in lp[:-1] if x is not None)  # drop the generated token
llm.create_completion("warm up", max_tokens=1, echo=True, logprobs=1)
t = time.perf_counter()
values = [echo_sum(i["prompt"] + i["response"]) - echo_sum(i["prompt"]) for i in items]
print(json.dumps({"seconds": time.perf_counter() - t, "values": values}))
"""


def arena(args, workdir):
    """Prompts x policies in the Arena-10K shape, as chat messages (so the system prompt matters)."""
    rng = random.Random(11)
    config = Path(workdir) / "arena.yaml"
    model = os.path.abspath(args.model)
    config.write_text(
        "policies:\n"
        f"  p0: {{model: {model}, temperature: 0.5}}\n"
        f"  pi_clone: {{model: {model}, temperature: 0.5}}\n"
        f"  pi_bad: {{model: {model}, temperature: 1.0, system_prompt: \"You are an unhelpful assistant.\"}}\n"
        f"  pi_hot: {{model: {model}, temperature: 1.5}}\n"
    )
    prompts = [f"Question {i}: {words(rng, 30, 60)}?" for i in range(args.arena_prompts)]
    responses = [[words(rng, 40, 80) for _ in range(2)] for _ in prompts]
    bodies = [
        {"model": policy, "items": [{"messages": [{"role": "user", "content": p}], "response": r} for r in rs]}
        for p, rs in zip(prompts, responses)
        for policy in ("p0", "pi_clone", "pi_bad", "pi_hot")
    ]
    return str(config), bodies


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--arena-prompts", type=int, default=6)
    ap.add_argument("--llama-cpp-python", help="python with llama-cpp-python installed")
    ap.add_argument("--lcp-items", type=int, default=4, help="items for llama-cpp-python (it is slow)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--chart", help="also draw scored tokens/s per mode into this PNG (needs matplotlib)")
    args = ap.parse_args()

    items = make_items(args.items)
    workdir = tempfile.mkdtemp(prefix="llama-scorer-bench-")
    items_file = Path(workdir) / "items.jsonl"
    items_file.write_text("".join(json.dumps(i) + "\n" for i in items))
    levels = [int(c) for c in args.concurrency.split(",")]

    plain = Server(args, args.model, ["--cache-bytes", "0", "--prefix-cache-bytes", "0"], workdir)
    cached = Server(args, args.model, [], workdir)
    arena_config, arena_bodies = arena(args, workdir)
    arena_on = Server(args, arena_config, [], workdir)
    arena_off = Server(args, arena_config, ["--cache-bytes", "0", "--prefix-cache-bytes", "0"], workdir)
    rows = {}  # mode -> list of (seconds, scored tokens, requests, latencies)

    def record(mode, seconds, scored, requests_n, latencies):
        rows.setdefault(mode, []).append((seconds, scored, requests_n, latencies))

    try:
        http_run(plain.base, "bench", item_bodies("bench", items[:2], 1), 1)  # warm-up
        scored = decoded = None
        for _ in range(args.rounds):
            out = subprocess.run(
                [str(BINARY), "bench-engine", "--model", args.model, "--items", str(items_file),
                 "--threads", str(args.threads), "--repeat", "1"],
                check=True, capture_output=True, text=True,
            )
            rep = json.loads(out.stdout)
            scored, decoded = rep["scored_tokens"], rep["decoded_tokens"]
            record("engine alone", rep["decode_only_s"][0], scored, len(items), [])
            record("engine + scoring", rep["engine_s"][0], scored, len(items), [])
            for c in levels:
                t, n, lat, _ = http_run(plain.base, "bench", item_bodies("bench", items, 1), c)
                assert n == scored, (n, scored)
                record(f"HTTP c={c}", t, n, len(items), lat)
            t, n, lat, _ = http_run(plain.base, "bench", item_bodies("bench", items, 16), 1)
            record("HTTP batch of 16", t, n, -(-len(items) // 16), lat)
            t, n, lat, _ = http_run(arena_off.base, None, arena_bodies, 4)
            record("arena, cache + prefix reuse off, c=4", t, n, len(arena_bodies), lat)
            t, n, lat, _ = http_run(arena_on.base, None, arena_bodies, 4)
            record("arena, cache + prefix reuse on, c=4", t, n, len(arena_bodies), lat)
            # The arena server now holds every answer: the next round would be all hits, so restart it.
            arena_on.stop()
            arena_on = Server(args, arena_config, [], workdir)
        # Cache hits: everything computed once, then the same single-item requests again.
        bodies = item_bodies("bench", items, 1)
        http_run(cached.base, "bench", bodies, 1)
        t, n, lat, server_ms = http_run(cached.base, "bench", bodies * 5, 1)
        record("cache hits, c=1", t, n, len(bodies) * 5, lat)
        hit_server_ms = server_ms
        peak = {"plain": plain.peak_rss_mib(), "cached": cached.peak_rss_mib()}
    finally:
        for s in (plain, cached, arena_on, arena_off):
            s.stop()

    ceiling = statistics.median(r[0] for r in rows["engine alone"])
    table = []
    for mode, runs in rows.items():
        t = statistics.median(r[0] for r in runs)
        n, reqs = runs[0][1], runs[0][2]
        lat = [x for r in runs for x in r[3]]
        table.append({
            "mode": mode, "seconds": t, "scored_tokens": n, "scored_per_s": n / t, "requests_per_s": reqs / t,
            "p50_ms": pct(lat, 50) if lat else None, "p99_ms": pct(lat, 99) if lat else None,
            # The arena rows do different work (chat prompts, four policies) and cache hits do none: no ratio.
            "vs_engine": None if mode.startswith(("arena", "cache")) else ceiling / t * n / scored,
        })
    print(f"\n{args.items} items, {scored} scored tokens ({decoded} decoded) per pass, {args.threads} threads, "
          f"medians of {args.rounds} interleaved rounds; model {Path(args.model).name}\n")
    print("| mode | seconds | scored tokens/s | requests/s | p50 ms | p99 ms | × engine alone |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    dash = lambda v, f: "—" if v is None else format(v, f)  # noqa: E731
    for r in table:
        print(f"| {r['mode']} | {r['seconds']:.2f} | {r['scored_per_s']:,.0f} | {r['requests_per_s']:,.1f} | "
              f"{dash(r['p50_ms'], '.1f')} | {dash(r['p99_ms'], '.1f')} | {dash(r['vs_engine'], '.2f')} |")
    hits = {"p50_ms": pct(hit_server_ms, 50), "p99_ms": pct(hit_server_ms, 99)}
    print(f"\ncache hits: server time per request p50 {hits['p50_ms']:.3f} ms, "
          f"p99 {hits['p99_ms']:.3f} ms (Server-Timing)")
    print(f"peak resident memory: {peak['plain']:.0f} MiB (cache off), {peak['cached']:.0f} MiB (cache on)",
          flush=True)
    lcp = None
    if args.llama_cpp_python:
        lcp = run_llama_cpp_python(args, items[: args.lcp_items], workdir)
        if "failed" in lcp:
            print(f"\n| llama-cpp-python ({args.lcp_items} items, c=1) | {lcp['failed']} | — | — | — | — | — |")
        else:
            print(f"\nllama-cpp-python ({args.lcp_items} items, c=1): {lcp['lcp_per_s']:,.1f} scored tokens/s vs "
                  f"llama-scorer HTTP c=1 {lcp['ours_per_s']:,.1f} on the same items: "
                  f"{lcp['ours_per_s'] / lcp['lcp_per_s']:.1f}× faster; its values differ from llama-scorer's by "
                  f"{lcp['mean_abs_diff']:.2f} nats on average (max {lcp['max_abs_diff']:.2f}) per item")
    results = {
        "model": Path(args.model).name, "items": args.items, "threads": args.threads, "rounds": args.rounds,
        "scored_tokens": scored, "decoded_tokens": decoded, "rows": table, "cache_hit_server_time": hits,
        "peak_rss_mib": peak, "llama_cpp_python": lcp,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.chart:
        draw_chart(results, args.chart)


def run_llama_cpp_python(args, subset, workdir):
    """The seed guide's recipe in llama-cpp-python, and llama-scorer on exactly the same items."""
    sub_file = Path(workdir) / "lcp-items.jsonl"
    sub_file.write_text("".join(json.dumps(i) + "\n" for i in subset))
    out = subprocess.run(
        [args.llama_cpp_python, "-c", LCP_SCRIPT, args.model, str(sub_file), str(args.threads)],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        # The comparison point may crash (llama-cpp-python built for the wrong CPU dies with SIGSEGV/SIGILL in
        # its first decode): report how, and let every other row be printed, saved and charted.
        failure = describe_exit(out.returncode)
        print(f"llama-cpp-python {failure}; last of its stderr:\n{out.stderr[-2000:]}", file=sys.stderr)
        return {"items": len(subset), "failed": failure}
    lcp = json.loads(out.stdout.strip().splitlines()[-1])
    ours = Server(args, args.model, ["--cache-bytes", "0", "--prefix-cache-bytes", "0"], workdir)
    try:
        t, n, _, _ = http_run(ours.base, "bench", item_bodies("bench", subset, 1), 1)
        values = [
            requests.post(f"{ours.base}/v1/logprobs", json={"model": "bench", **i}).json()["data"][0]["logprob"]
            for i in subset
        ]
    finally:
        ours.stop()
    diffs = [abs(a - b) for a, b in zip(lcp["values"], values)]
    return {
        "items": len(subset), "scored_tokens": n, "lcp_seconds": lcp["seconds"], "ours_seconds": t,
        "lcp_per_s": n / lcp["seconds"], "ours_per_s": n / t,
        "mean_abs_diff": statistics.mean(diffs), "max_abs_diff": max(diffs),
    }


def describe_exit(code):
    """How a child process ended: "crashed with SIGSEGV (signal 11)" or "exited with status 1"."""
    if code < 0 or code > 128:  # killed by a signal: -N from subprocess, 128+N through a shell
        n = -code if code < 0 else code - 128
        try:
            name = signal.Signals(n).name
        except ValueError:
            name = f"signal {n}"
        return f"crashed with {name} (signal {n})"
    return f"exited with status {code}"


def draw_chart(results, path):
    """Scored tokens/s per mode as horizontal bars, the engine-alone ceiling as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(r["mode"], r["scored_per_s"]) for r in results["rows"] if not r["mode"].startswith("cache hits")]
    lcp = results["llama_cpp_python"]
    if lcp and "failed" not in lcp:
        bars.append((f"llama-cpp-python (seed guide's recipe, {lcp['items']} items)", lcp["lcp_per_s"]))
    elif lcp:
        bars.append((f"llama-cpp-python: {lcp['failed']}", 0.0))
    labels, values = zip(*bars)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(bars) + 1.4))
    colours = ["#888888" if m.startswith("engine alone") else "#c0504d" if m.startswith("llama-cpp") else "#4f81bd"
               for m in labels]
    ax.barh(range(len(bars)), values, color=colours)
    ax.set_yticks(range(len(bars)), labels)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:,.0f}", va="center")
    engine = next(r["scored_per_s"] for r in results["rows"] if r["mode"] == "engine alone")
    ax.axvline(engine, color="#888888", linestyle="--", linewidth=1)
    ax.set_xlabel("scored tokens per second (higher is better)")
    ax.set_title(f"llama-scorer, {results['model']}\n{results['threads']} CPU threads, "
                 f"medians of {results['rounds']} interleaved rounds", fontsize=10)
    ax.set_xlim(0, max(values) * 1.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
