#!/usr/bin/env python3
"""Harness-shaped throughput: an MMLU-shaped multiple-choice workload (one ~400-token context × 4 one-token
choices) scored through lm-eval's own `local-completions` client against `llama-scorer serve`, with
whole-prompt reuse on and off, beside llama.cpp's `llama-perplexity --hellaswag` on the same tokens (the same
context + " " + choice texts, tokenized jointly by both). Prints one table; `--json` saves the numbers.

    scripts/bench-harness.py --perplexity PATH/llama-perplexity [--questions 48] [--threads 2]

lm-eval runs in its own venv (`make .venv-lmeval/.installed`); its loglikelihood call is timed inside the
process, so interpreter start-up and task loading are not counted. The server's response cache is off, so
every request is computed. llama-perplexity is not part of the project: build it from the llama.cpp that
llama-cpp-python's source distribution carries, at the AVX2 level (docs/performance.md gives the commands).
"""

import argparse
import json
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("river mountain engine theory market signal protein village harvest orbit ledger canvas "
         "circuit glacier lantern verdict quarry meadow vessel archive beacon furnace compass "
         "delta fossil garrison harbor island jungle kernel lattice monsoon nectar oasis prism "
         "quartz reef summit tundra umbra valley willow zenith anchor bridge copper dune").split()
SUBJECTS = ("geology", "economics", "biology", "astronomy", "history", "chemistry", "law", "music")

LM_EVAL_DRIVER = r"""
import json, sys, time
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model
spec = json.load(open(sys.argv[1]))
lm = get_model("local-completions").create_from_arg_string(
    spec["model_args"], {"batch_size": spec["batch_size"]})
reqs = [Instance(request_type="loglikelihood", doc={}, arguments=(c, k), idx=i)
        for i, (c, k) in enumerate(spec["pairs"])]
t0 = time.perf_counter()
out = lm.loglikelihood(reqs, disable_tqdm=True)
seconds = time.perf_counter() - t0
json.dump({"seconds": seconds, "loglikelihoods": [o[0] for o in out]}, open(sys.argv[2], "w"))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def questions(n, context_tokens, tokens_per_word, seed=7):
    """Single-line MMLU-shaped contexts (a passage, a question, four lettered options, "Answer:") and the
    gold letter; single-line because llama-perplexity's HellaSwag file is one context per line."""
    rng = random.Random(seed)
    words = max(1, int(context_tokens / tokens_per_word) - 40)
    out = []
    for i in range(n):
        passage = " ".join(rng.choice(WORDS) for _ in range(words))
        options = " ".join(f"{letter}. {rng.choice(WORDS)} {rng.choice(WORDS)}" for letter in "ABCD")
        context = (f"The following is a multiple choice question about {SUBJECTS[i % len(SUBJECTS)]}. "
                   f"Passage: {passage}. Question: which word appears most often in the passage? "
                   f"{options} Answer:")
        out.append((context, rng.randrange(4)))
    return out


class Server:
    def __init__(self, binary, model, threads, reuse):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [binary, "serve", "--model", model, "--alias", "smol", "--port", str(self.port),
                "--threads", str(threads), "--cache-bytes", "0"]
        if not reuse:
            args += ["--prefix-cache-bytes", "0"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if requests.get(self.base + "/health", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise SystemExit("the server did not start")

    def tokens(self, text):
        r = requests.post(self.base + "/tokenize", json={"prompt": text, "add_special_tokens": False}, timeout=60)
        r.raise_for_status()
        return r.json()["tokens"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def run_lm_eval(python, base, pairs, batch_size):
    with tempfile.TemporaryDirectory() as d:
        spec, out, driver = Path(d, "spec.json"), Path(d, "out.json"), Path(d, "driver.py")
        driver.write_text(LM_EVAL_DRIVER)
        spec.write_text(json.dumps({
            "model_args": f"model=smol,base_url={base}/v1/completions,tokenized_requests=True",
            "batch_size": batch_size, "pairs": pairs}))
        env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "OPENAI_API_KEY": "", "PATH": "/usr/bin:/bin"}
        subprocess.run([python, str(driver), str(spec), str(out)], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def run_perplexity(binary, model, qs, threads, ctx, parallel):
    """llama-perplexity's HellaSwag mode on the same texts: (seconds scoring, tasks, log)."""
    with tempfile.TemporaryDirectory() as d:
        data = Path(d, "mc.txt")
        data.write_text("".join(f"{c}\n{gold}\nA\nB\nC\nD\n" for c, gold in qs))
        cmd = [binary, "-m", model, "--hellaswag", "--hellaswag-tasks", str(len(qs)), "-f", str(data),
               "-c", str(ctx), "-b", str(ctx), "-np", str(parallel), "-t", str(threads)]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"llama-perplexity failed ({r.returncode}):\n{r.stderr[-3000:]}")
        log = r.stdout + r.stderr
        load = re.search(r"load time\s*=\s*([\d.]+) ms", log)
        total = re.search(r"total time\s*=\s*([\d.]+) ms", log)
        seconds = (float(total.group(1)) - float(load.group(1))) / 1e3 if load and total else wall
        return seconds, " ".join(cmd)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(ROOT / "target/release/llama-scorer"))
    ap.add_argument("--model", default=str(ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--perplexity", required=True, help="llama-perplexity built at the AVX2 level")
    ap.add_argument("--lm-eval-python", default=str(ROOT / ".venv-lmeval/bin/python"))
    ap.add_argument("--questions", type=int, default=48)
    ap.add_argument("--context-tokens", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4, help="lm-eval's --batch_size (prompts per request)")
    ap.add_argument("--perplexity-ctx", type=int, default=2048)
    ap.add_argument("--perplexity-parallel", type=int, default=16)
    ap.add_argument("--json")
    a = ap.parse_args()

    rows, results = [], {}
    probe = Server(a.binary, a.model, a.threads, reuse=True)
    try:
        sample = " ".join(WORDS)
        tokens_per_word = len(probe.tokens(sample)) / len(WORDS)
        qs = questions(a.questions, a.context_tokens, tokens_per_word)
        context_lengths = [len(probe.tokens(c)) for c, _ in qs]
    finally:
        probe.stop()
    pairs = [(c, " " + letter) for c, _ in qs for letter in "ABCD"]
    n = len(pairs)
    mean_ctx = sum(context_lengths) / len(context_lengths)

    for reuse in (True, False):
        server = Server(a.binary, a.model, a.threads, reuse)
        try:
            out = run_lm_eval(a.lm_eval_python, server.base, pairs, a.batch_size)
        finally:
            server.stop()
        label = "llama-scorer, lm-eval local-completions, prompt reuse " + ("on" if reuse else "off")
        results[label] = out["loglikelihoods"]
        rows.append((label, out["seconds"]))
    seconds, cmd = run_perplexity(a.perplexity, a.model, qs, a.threads, a.perplexity_ctx, a.perplexity_parallel)
    rows.append((f"llama-perplexity --hellaswag (-c {a.perplexity_ctx}, -np {a.perplexity_parallel})", seconds))

    on, off = results.values()
    same = all(x == y for x, y in zip(on, off))
    print(f"{len(qs)} questions × 4 choices = {n} requests; contexts {min(context_lengths)}–"
          f"{max(context_lengths)} tokens (mean {mean_ctx:.0f}); {a.threads} threads; "
          f"lm-eval batch_size {a.batch_size}")
    print(f"{'run':<72} {'seconds':>8} {'requests/s':>11} {'vs perplexity':>14}")
    ppl_rate = n / rows[-1][1]
    for label, s in rows:
        print(f"{label:<72} {s:>8.2f} {n / s:>11.2f} {n / s / ppl_rate:>13.2f}×")
    print(f"log-likelihoods with reuse on and off bit-identical: {same}")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "requests": n, "questions": len(qs), "context_tokens": context_lengths, "threads": a.threads,
            "rows": [{"run": label, "seconds": s, "requests_per_s": n / s} for label, s in rows],
            "reuse_bit_identical": same, "perplexity_command": cmd}, indent=1))
    if not same:
        sys.exit("prompt reuse changed a number")


if __name__ == "__main__":
    main()
