"""Helpers of scripts/gpu-check.sh (Python standard library only: the GPU host has no extra packages).

  items OUT.jsonl [--n 16] [--chars 256]   write deterministic {prompt, response} items
  determinism --url URL --model NAME --items F --out F.json
        score every item alone (twice), inside batches of different composition, and under concurrent
        clients, and compare every number bit for bit with the first pass
  score --url URL --model NAME --items F --n K --out F.json
        score the first K items alone and keep their numbers (for a comparison across devices or builds)
  nats A.json B.json --out F.json    how far two `score` files are apart: per token and per item total, in nats
  table --bench B.json --determinism D.json --devices V.json [--card NAME] [--nats F.json ...]
        print the summary table
"""
import argparse
import concurrent.futures
import json
import random
import sys
import time
import urllib.request

# No word starts with "t": the synthetic model's BPE has the merge "Ġ t" but no token for its result, so
# " t" would not survive tokenization and the server would (rightly) refuse the response.
WORDS = ("a model scores each word of every response given its prompt exactly once and its numbers "
         "never change with load batch size or order of requests on any device").split()
assert not any(w.startswith("t") for w in WORDS)


def make_items(path, n, chars):
    rng = random.Random(0)

    def text(k):
        out = []
        while sum(len(w) + 1 for w in out) < k:
            out.append(rng.choice(WORDS))
        return " ".join(out)[:k]

    with open(path, "w") as f:
        for _ in range(n):
            f.write(json.dumps({"prompt": text(chars), "response": " " + text(chars - 1)}) + "\n")


def post(url, body, timeout=600):
    req = urllib.request.Request(url + "/v1/logprobs", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def numbers(entry):
    """Every number a client would use from one scored item, in a fixed order."""
    if entry.get("cached"):
        raise SystemExit("a result came from the cache: determinism is not being tested")
    nums = [entry["logprob"], entry["sampling_logprob"]]
    for t in entry["logprobs"]["content"]:
        nums += [t["token_id"], t["logprob"], t["sampling_logprob"]]
    return nums


def compare(ref, other):
    """(bit-identical?, largest absolute difference) over all items."""
    same, worst = True, 0.0
    for a, b in zip(ref, other):
        if len(a) != len(b):
            return False, float("inf")
        for x, y in zip(a, b):
            if x != y:
                same = False
                worst = max(worst, abs(x - y))
    return same and len(ref) == len(other), worst


def determinism(args):
    items = [json.loads(l) for l in open(args.items) if l.strip()]
    model = args.model

    def alone(i):
        return numbers(post(args.url, {"model": model, **items[i]})["data"][0])

    def batch(order):
        data = post(args.url, {"model": model, "items": [items[i] for i in order]})["data"]
        out = [None] * len(items)
        for i, entry in zip(order, data):
            out[i] = numbers(entry)
        return out

    n = len(items)
    t0 = time.time()
    ref = [alone(i) for i in range(n)]
    rows = []

    def record(name, result):
        same, worst = compare(ref, result)
        rows.append({"mode": name, "bit_identical": same, "max_abs_diff": worst})
        print(f"  {name}: {'bit-identical' if same else f'DIFFERENT (max {worst:.3g})'}", file=sys.stderr)

    record("repeat: each item alone again", [alone(i) for i in range(n)])
    record("batch: all items in one request", batch(list(range(n))))
    rev = list(reversed(range(n)))
    record("batch: reversed order", batch(rev))
    shuffled = list(range(n))
    random.Random(1).shuffle(shuffled)
    halves = [shuffled[: n // 2], shuffled[n // 2:]]
    mixed = [None] * n
    for part in halves:
        for i, v in enumerate(batch(part)):
            if v is not None:
                mixed[i] = v
    record("batch: shuffled halves", mixed)

    # Concurrency: every item alone from 8 clients at once, while two batch requests run beside them.
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        batches = [pool.submit(batch, rev), pool.submit(batch, shuffled)]
        singles = {i: pool.submit(alone, i) for i in shuffled}
        concurrent_alone = [singles[i].result() for i in range(n)]
        concurrent_batches = [b.result() for b in batches]
    record("concurrent: 8 clients, items alone", concurrent_alone)
    record("concurrent: batches beside them (reversed)", concurrent_batches[0])
    record("concurrent: batches beside them (shuffled)", concurrent_batches[1])

    out = {"items": n, "scored_tokens": sum((len(r) - 2) // 3 for r in ref),
           "seconds": time.time() - t0, "checks": rows}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    if not all(r["bit_identical"] for r in rows):
        print("determinism: some results differ", file=sys.stderr)
        return 1
    return 0


def score(args):
    items = [json.loads(l) for l in open(args.items) if l.strip()][: args.n]
    t0 = time.time()
    data = [post(args.url, {"model": args.model, **item})["data"][0] for item in items]
    out = {"items": len(data), "seconds": time.time() - t0,
           "totals": [d["logprob"] for d in data],
           "tokens": [[t["logprob"] for t in d["logprobs"]["content"]] for d in data],
           "token_ids": [[t["token_id"] for t in d["logprobs"]["content"]] for d in data]}
    with open(args.out, "w") as f:
        json.dump(out, f)
    print(f"  scored {len(data)} items in {out['seconds']:.1f} s", file=sys.stderr)
    return 0


def nats(args):
    a, b = json.load(open(args.a)), json.load(open(args.b))
    if a["token_ids"] != b["token_ids"]:
        raise SystemExit("the two runs tokenized the items differently")
    tok = [abs(x - y) for ra, rb in zip(a["tokens"], b["tokens"]) for x, y in zip(ra, rb)]
    tot = [abs(x - y) for x, y in zip(a["totals"], b["totals"])]
    out = {"label": args.label, "items": len(tot), "tokens": len(tok),
           "max_abs_token_diff": max(tok), "mean_abs_token_diff": sum(tok) / len(tok),
           "max_abs_total_diff": max(tot), "mean_abs_total_diff": sum(tot) / len(tot),
           "bit_identical": tok == [0.0] * len(tok) and tot == [0.0] * len(tot)}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"  {args.label}: max |diff| {out['max_abs_token_diff']:.3g} nats per token, "
          f"{out['max_abs_total_diff']:.3g} per item total", file=sys.stderr)
    return 0


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


def table(args):
    bench = json.load(open(args.bench))
    det = json.load(open(args.determinism))
    devs = json.load(open(args.devices))
    gpus = [f"{d['name']} ({d['description']}, {d['memory_total_mib']} MiB)"
            for d in devs["devices"] if d["kind"] in ("gpu", "igpu")]
    scored, decoded = bench["scored_tokens"], bench["decoded_tokens"]
    pp, dec, eng = (median(bench[k]) for k in ("prompt_processing_s", "decode_only_s", "engine_s"))
    lines = [
        f"card: {args.card or '-'}; devices: {', '.join(gpus) or 'none (CPU only)'}",
        f"model: {args.model_name}; device {bench['device']}, {bench['offloaded_layers']} layers offloaded; "
        f"{bench['items']} items, {scored} scored / {decoded} decoded tokens per pass; "
        f"medians of {len(bench['engine_s'])} passes",
        "",
        "| mode | seconds | decoded tokens/s | scored tokens/s | x prompt processing |",
        "|---|---:|---:|---:|---:|",
        f"| engine: prompt processing, one logit per sequence | {pp:.3f} | {decoded / pp:,.0f} | - | 1.00 |",
        f"| engine: same decodes as scoring, logits at response positions | {dec:.3f} | {decoded / dec:,.0f} "
        f"| {scored / dec:,.0f} | {pp / dec:.2f} |",
        f"| llama-scorer engine path (queue, inference thread, log-softmax) | {eng:.3f} | {decoded / eng:,.0f} "
        f"| {scored / eng:,.0f} | {pp / eng:.2f} |",
        "",
        f"log-softmax kernel, one CPU thread: {bench['log_softmax_rows_per_s_128k']:,.0f} rows/s of a 128,256 vocabulary",
        "",
        "| determinism check (vs each item alone, first pass) | result |",
        "|---|---|",
    ]
    for r in det["checks"]:
        res = "bit-identical" if r["bit_identical"] else f"differs (max {r['max_abs_diff']:.3g} nats)"
        lines.append(f"| {r['mode']} | {res} |")
    diffs = [json.load(open(p)) for p in args.nats or []]
    if diffs:
        lines += ["", "| comparison | items / tokens | max per token | mean per token | max per item total |",
                  "|---|---:|---:|---:|---:|"]
        for d in diffs:
            lines.append(f"| {d['label']} | {d['items']} / {d['tokens']} | {d['max_abs_token_diff']:.3g} "
                         f"| {d['mean_abs_token_diff']:.3g} | {d['max_abs_total_diff']:.3g} |")
    print("\n".join(lines))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("items")
    p.add_argument("out")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--chars", type=int, default=256)
    p = sub.add_parser("determinism")
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--items", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("table")
    p.add_argument("--bench", required=True)
    p.add_argument("--determinism", required=True)
    p.add_argument("--devices", required=True)
    p.add_argument("--card", default="")
    p.add_argument("--model-name", default="")
    p.add_argument("--nats", action="append", help="a `nats` output file (repeatable)")
    p = sub.add_parser("score")
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--items", required=True)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--out", required=True)
    p = sub.add_parser("nats")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--label", required=True)
    p.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.cmd == "items":
        make_items(args.out, args.n, args.chars)
        return 0
    return {"determinism": determinism, "table": table, "score": score, "nats": nats}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
