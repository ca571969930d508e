#!/usr/bin/env python3
"""Soak test: many concurrent clients for a long time against one llama-scorer process, every answer checked.

Starts the release binary on both test models (SmolLM2 and Gemma 3, policies at different temperatures),
records every request of a fixed set from the idle server (one request at a time), then runs N clients for
D seconds, each picking from a mix:

  score             /v1/logprobs, one item (prompt, chat messages, token ids, echo, top_logprobs)
  batch             /v1/logprobs with `items` (some share a whole prompt, so prompt reuse is exercised)
  echo              /v1/completions echo scoring (max_tokens 0, legacy and content[] logprobs)
  stream            /v1/completions streamed generation with a fixed seed
  chat_stream       /v1/chat/completions streamed generation with a fixed seed
  repeat            a scoring request sent twice in a row: the second must be a cache hit with the same bits
  disconnect_score  a batch on fresh content, the socket closed before the answer
  disconnect_stream a long generation, the socket closed after its first event
  invalid           bad input: a 4xx in the error shape, the idle server's body exactly

Every answer must be its own request's (its `x-request-id`, its model, its numbers) and equal the idle
server's: JSON numbers are compared as the server's text (the serializer writes one text per f64), ids and
timestamps left out. docs/api.md promises this for generation too ("the same seed and request give the same
tokens whatever the load"), so streamed events are compared in full, log-probabilities included.

The response cache is given a TTL (--cache-ttl, 20 s) so that the fixed requests are computed again and
again, not only served from the cache; the idle pass includes the longest responses any request sends, so
llama.cpp's output buffers reach their high-water mark before the load.

Resident memory (VmRSS), open file descriptors and threads of the server are sampled every few seconds.
Verdict: no 5xx, no mismatch, no connection error other than the deliberate disconnects, no unexpected
status; after warm-up resident memory never rises more than a bound above its warm-up high-water mark; after
the clients stop (and a settling pause), file descriptors are back to the idle count measured before the load
and threads are at most their post-warm-up maximum. Writes report.json and samples.csv to --out, prints a
table, exits 1 on any failure.

Standard library only: `python3 scripts/soak.py --clients 64 --duration 600` (see `make soak`).
"""

import argparse
import csv
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "soak-key"
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
# Policies: both models, two temperatures each, and a short context for the context-length error.
POLICIES = {
    "smol": (SMOL_FILE, {}),
    "smol-t07": (SMOL_FILE, {"temperature": 0.7, "seed": 7}),
    "gemma": (GEMMA_FILE, {}),
    "gemma-t05": (GEMMA_FILE, {"temperature": 0.5, "seed": 5}),
    "smol-short": (SMOL_FILE, {"n_ctx": 64}),
}
# Relative frequency of each kind of request a client picks.
KIND_WEIGHTS = {
    "score": 20,
    "batch": 10,
    "echo": 10,
    "stream": 8,
    "chat_stream": 4,
    "repeat": 10,
    "disconnect_score": 4,
    "disconnect_stream": 4,
    "invalid": 14,
}
DISCONNECT_KINDS = ("disconnect_score", "disconnect_stream")

PROMPTS = [
    ("What is the capital of France?", " Paris is the capital of France."),
    ("Name a prime number larger than ten.", " Thirteen is one."),
    ("Translate 'good morning' into German.", " Guten Morgen."),
    ("Write a haiku about rain.", " Soft rain on the roof,\nthe garden drinks in silence,\nclouds move on at dusk."),
    ("def add(a, b):\n", "    return a + b\n"),
    ("Les chats aiment", " dormir au soleil."),
    ("The boiling point of water at sea level is", " 100 degrees Celsius."),
    ("List three colours:", " red, green and blue"),
    ("Why is the sky blue?", " Rayleigh scattering favours short wavelengths."),
    ("2 + 2 =", " 4"),
    ("日本の首都は", "東京です。"),
    ("Emoji check: 🙂", " 🎉 done"),
]
LONG_PROMPT = (
    "You are grading answers to a geography quiz. Read the question and the answer, then reply with a short "
    "verdict. Question: which river flows through Vienna, Budapest and Belgrade? Answer:"
)


@dataclass
class Req:
    """One request of the fixed set: what is sent, and whether an error answer is the expected one."""

    name: str
    kind: str
    method: str
    path: str
    body: bytes | None
    stream: bool = False
    auth: bool = True
    expect_error: bool = False


def post(name, kind, path, body, **kw):
    return Req(name, kind, "POST", path, json.dumps(body).encode(), **kw)


def build_pool():
    """The fixed requests, by kind; every valid one must have an answer distinct from every other's."""
    pool = {k: [] for k in ("score", "batch", "echo", "stream", "chat_stream", "invalid")}
    scoring = ["smol", "smol-t07", "gemma", "gemma-t05"]
    for i, (prompt, response) in enumerate(PROMPTS):
        policy = scoring[i % 4]
        body = {"model": policy, "prompt": prompt, "response": response}
        if i % 3 == 1:
            body["top_logprobs"] = 3
        if i % 5 == 2:
            body["echo"] = True
        pool["score"].append(post(f"score-{i}", "score", "/v1/logprobs", body))
        if policy.startswith("smol"):
            chat = {"model": policy, "messages": [{"role": "user", "content": prompt}], "response": response.strip()}
            if i % 2 == 0:
                chat["score_end_of_turn"] = True
            pool["score"].append(post(f"chat-{i}", "score", "/v1/logprobs", chat))
    pool["score"].append(post("ids-smol", "score", "/v1/logprobs",
                              {"model": "smol", "prompt_token_ids": [504, 3458, 314], "response_token_ids": [28, 253]}))
    pool["score"].append(post("ids-gemma", "score", "/v1/logprobs",
                              {"model": "gemma-t05", "prompt_token_ids": [2, 818, 5279], "response_token_ids": [529]}))
    # The longest responses any request here sends (the disconnects' shape): llama.cpp's output buffer grows
    # to the most rows scored at once and stays there, so the idle pass sets that high-water mark.
    for policy in ("smol-t07", "gemma"):
        pool["score"].append(post(f"long-{policy}", "score", "/v1/logprobs",
                                  {"model": policy, "prompt": "Note:", "response": LONG_PROMPT}))
    for b in range(6):
        policy = scoring[b % 4]
        if b in (0, 2):  # one long prompt, several responses: whole-prompt reuse inside the batch (both models)
            items = [{"prompt": LONG_PROMPT, "response": r} for r in (" The Danube.", " The Rhine.", " Correct.")]
        else:
            items = [{"prompt": p, "response": r} for p, r in PROMPTS[b:b + 2 + b % 3]]
        pool["batch"].append(post(f"batch-{b}", "batch", "/v1/logprobs", {"model": policy, "items": items}))
    for i, (prompt, response) in enumerate(PROMPTS[:8]):
        body = {"model": scoring[(i + 1) % 4], "prompt": prompt + response, "max_tokens": 0, "echo": True,
                "logprobs": 1 if i % 2 == 0 else True}
        pool["echo"].append(post(f"echo-{i}", "echo", "/v1/completions", body))
    for i, (prompt, _) in enumerate(PROMPTS[:8]):
        body = {"model": scoring[i % 4], "prompt": prompt, "max_tokens": 8, "seed": 100 + i, "stream": True}
        if i % 2 == 0:
            body["logprobs"] = 1
        if i % 3 == 0:
            body["temperature"] = 0.9
        pool["stream"].append(post(f"stream-{i}", "stream", "/v1/completions", body, stream=True))
    for i, (prompt, _) in enumerate(PROMPTS[:4]):
        body = {"model": ["smol", "smol-t07"][i % 2], "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 6, "seed": 200 + i, "stream": True}
        pool["chat_stream"].append(post(f"chat-stream-{i}", "chat_stream", "/v1/chat/completions", body, stream=True))
    invalid = [
        ("unknown-model", "/v1/logprobs", {"model": "no-such-policy", "prompt": "a", "response": "b"}),
        ("unknown-field", "/v1/logprobs", {"model": "smol", "prompt": "a", "response": "b", "bogus": 1}),
        ("wrong-type", "/v1/logprobs", {"model": "gemma", "prompt": "a", "response": 7}),
        ("empty-items", "/v1/logprobs", {"model": "gemma", "items": []}),
        ("id-outside-vocab", "/v1/logprobs", {"model": "smol", "prompt": "a", "response_token_ids": [99999999]}),
        ("too-long", "/v1/logprobs", {"model": "smol-short", "prompt": "word " * 80, "response": " end"}),
        ("top-logprobs-21", "/v1/logprobs", {"model": "gemma-t05", "prompt": "a", "response": "b", "top_logprobs": 21}),
        ("no-template", "/v1/logprobs", {"model": "gemma", "messages": [{"role": "user", "content": "hi"}],
                                         "response": "hello"}),
        ("logprobs-21", "/v1/completions", {"model": "smol", "prompt": "x", "max_tokens": 0, "echo": True,
                                           "logprobs": 21}),
        ("empty-messages", "/v1/chat/completions", {"model": "smol-t07", "messages": [], "max_tokens": 4}),
    ]
    for name, path, body in invalid:
        pool["invalid"].append(post(name, "invalid", path, body, expect_error=True))
    pool["invalid"] += [
        Req("malformed-json", "invalid", "POST", "/v1/logprobs", b'{"model": "smol", "prompt": "a"', expect_error=True),
        Req("nan", "invalid", "POST", "/v1/logprobs",
            b'{"model": "gemma", "prompt": "a", "response": "b", "temperature": NaN}', expect_error=True),
        Req("no-key", "invalid", "POST", "/v1/logprobs", json.dumps({"model": "smol", "prompt": "a", "response": "b"}).encode(),
            auth=False, expect_error=True),
        Req("wrong-method", "invalid", "GET", "/v1/logprobs", None, expect_error=True),
        Req("no-route", "invalid", "POST", "/v1/nothing-here", b"{}", expect_error=True),
    ]
    return pool


# --- talking to the server --------------------------------------------------------------------------------


def headers_for(req, request_id):
    h = {"x-request-id": request_id}
    if req.body is not None:
        h["content-type"] = "application/json"
    if req.auth:
        h["authorization"] = f"Bearer {API_KEY}"
    return h


def send(conn, req, request_id):
    """Sends `req` on a keep-alive connection; returns (status, echoed request id, body bytes or SSE payloads)."""
    conn.request(req.method, req.path, body=req.body, headers=headers_for(req, request_id))
    resp = conn.getresponse()
    echoed = resp.getheader("x-request-id")
    if req.stream and resp.status == 200:
        events = []
        while line := resp.readline():
            if line.startswith(b"data: "):
                events.append(line[6:].rstrip(b"\r\n"))
        return resp.status, echoed, events
    return resp.status, echoed, resp.read()


def raw_request(req, port, request_id):
    head = [f"{req.method} {req.path} HTTP/1.1", f"host: 127.0.0.1:{port}", "connection: close"]
    head += [f"{k}: {v}" for k, v in headers_for(req, request_id).items()]
    head.append(f"content-length: {len(req.body or b'')}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (req.body or b"")


def disconnect(port, req, request_id, wait_s, first_event):
    """Sends `req` on its own socket and closes it early: after `wait_s`, or once the first streamed event
    arrived. Returns the status line seen (b'' when none came before the close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=300) as s:
        s.sendall(raw_request(req, port, request_id))
        seen = b""
        if first_event:
            while b"\ndata: " not in seen:
                chunk = s.recv(4096)
                if not chunk:
                    break
                seen += chunk
        else:
            time.sleep(wait_s)
    return seen.split(b"\r\n", 1)[0]


# --- what an answer must be -------------------------------------------------------------------------------


def canonical(doc):
    """JSON text of `doc` parsed with numbers kept as the server wrote them; ids, timestamps and `cached` left
    out."""
    v = json.loads(doc, parse_float=lambda s: {"f": s}, parse_constant=lambda s: {"c": s})
    if isinstance(v, dict):
        v.pop("id", None)
        v.pop("created", None)
        for item in v.get("data", []) if isinstance(v.get("data"), list) else []:
            item.pop("cached", None)  # a hit carries the miss's bits; the flag itself is checked by `repeat`
    return json.dumps(v, sort_keys=True, ensure_ascii=False)


def cached_flags(doc):
    """The `cached` flag of each item of a /v1/logprobs answer."""
    return [d.get("cached") for d in json.loads(doc).get("data", [])]


def normal_answer(req, status, payload):
    """What is compared with the idle server's answer: the status and the canonical body (a stream: every
    event, each from one and the same completion id)."""
    if not req.stream or status != 200:
        return status, canonical(payload)
    ids = {json.loads(e)["id"] for e in payload if e != b"[DONE]"}
    if len(ids) != 1:
        raise ValueError(f"stream events carry completion ids {sorted(ids)}")
    return status, [canonical(e) if e != b"[DONE]" else "[DONE]" for e in payload]


def error_shape_problem(status, payload):
    """Why an answer expected to be an error is not a 4xx in the Fireworks error shape (None when it is)."""
    if not 400 <= status < 500:
        return f"status {status}, expected a 4xx"
    try:
        err = json.loads(payload)["error"]
        assert err["object"] == "error" and err["message"] and err["type"]
    except (ValueError, KeyError, TypeError, AssertionError):
        return f"not the error shape: {payload[:200]!r}"
    return None


# --- the server process -----------------------------------------------------------------------------------


def write_config(path, models, cache_ttl):
    lines = [f"server: {{api_keys: [{API_KEY}]}}", f"cache: {{ttl_seconds: {cache_ttl}}}", "policies:"]
    for name, (file, extra) in POLICIES.items():
        fields = {"model": str((models / file).resolve()), **extra}
        lines.append(f"  {name}: " + json.dumps(fields))
    path.write_text("\n".join(lines) + "\n")


def start_server(binary, config, port, log_path):
    log = open(log_path, "w")
    proc = subprocess.Popen([str(binary), "serve", "--config", str(config), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} during start-up; see {log_path}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/ready", headers={"authorization": f"Bearer {API_KEY}"})
            if c.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server not ready within 300 s")


def get_json(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("GET", path, headers={"authorization": f"Bearer {API_KEY}"})
    return json.loads(c.getresponse().read())


def proc_sample(pid):
    """(VmRSS KiB, open file descriptors, threads) of process `pid`."""
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.split()
    return int(status["VmRSS"][0]), len(os.listdir(f"/proc/{pid}/fd")), int(status["Threads"][0])


# --- the run ----------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts and latencies of one kind of request; shared by the clients under `Stats.lock`."""

    sent: int = 0
    answered: int = 0
    mismatches: int = 0
    server_errors: int = 0
    connection_errors: int = 0
    unexpected_status: int = 0
    cache_hits: int = 0
    latencies: list = field(default_factory=list)
    hit_latencies: list = field(default_factory=list)  # answers whose every item was a cache hit


class Stats:
    """Everything the clients observed; failures keep their first examples for the report."""

    def __init__(self, kinds):
        self.lock = threading.Lock()
        self.kinds = {k: Tally() for k in kinds}
        self.examples = []
        self.fresh_repeats = 0  # repeats whose first answer was computed (not cached)
        self.fresh_repeat_misses = 0  # ... and whose second answer was not a cache hit
        self.idle_reopens = 0  # keep-alive connections left idle past REUSE_IDLE_LIMIT and opened afresh

    def fail(self, kind, what, detail):
        with self.lock:
            setattr(self.kinds[kind], what, getattr(self.kinds[kind], what) + 1)
            if len(self.examples) < 30:
                self.examples.append({"kind": kind, "failure": what, "detail": detail[:600]})

    def done(self, kind, seconds, hits=0):
        with self.lock:
            t = self.kinds[kind]
            t.answered += 1
            t.latencies.append(seconds)
            if hits:
                t.cache_hits += 1
                t.hit_latencies.append(seconds)

    def total_answered(self):
        with self.lock:
            return sum(t.answered for t in self.kinds.values())


def check(req, status, echoed, payload, request_id, reference):
    """Why this answer is not the idle server's answer to this request (None when it is)."""
    if echoed != request_id:
        return "mismatches", f"{req.name}: x-request-id {echoed!r}, sent {request_id!r}"
    if status >= 500:
        return "server_errors", f"{req.name}: {status} {payload!r}"
    if req.expect_error and (problem := error_shape_problem(status, payload)):
        return "unexpected_status", f"{req.name}: {problem}"
    if not req.expect_error and status != 200:
        return "unexpected_status", f"{req.name}: {status} {payload!r}"
    try:
        got = normal_answer(req, status, payload)
    except ValueError as e:
        return "mismatches", f"{req.name}: {e}"
    if got != reference[req.name]:
        return "mismatches", f"{req.name}: not the idle server's answer; {first_difference(got, reference[req.name])}"
    return None


def first_difference(got, expected):
    """Where two normalised answers first differ, with a little context."""
    got, expected = json.dumps(got, ensure_ascii=False), json.dumps(expected, ensure_ascii=False)
    i = next((k for k, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    return f"at character {i}: got …{got[max(0, i - 80):i + 80]}…, idle server …{expected[max(0, i - 80):i + 80]}…"


# The server closes a keep-alive connection idle for 75 s (server.idle_timeout_secs). A client that sends on
# such a connection as the server closes it gets a broken pipe, a race every HTTP/1.1 client has to avoid, as
# connection pools do, by not reusing a connection idle for nearly that long: a client here may leave its
# connection idle for a minute while it runs a disconnect on sockets of its own.
REUSE_IDLE_LIMIT = 60


class Client(threading.Thread):
    """One client: picks a kind and a request at random (seeded), sends, checks, until the deadline."""

    def __init__(self, index, port, pool, reference, stats, deadline, seed, cache_ttl):
        super().__init__(daemon=True)
        self.index, self.port, self.pool, self.reference = index, port, pool, reference
        self.stats, self.deadline, self.cache_ttl = stats, deadline, cache_ttl
        self.rng = random.Random(seed * 1000 + index)
        self.conn = None
        self.last_used = 0.0
        self.n = 0

    def request_id(self):
        self.n += 1
        return f"soak-{self.index}-{self.n}"

    def run(self):
        kinds, weights = list(KIND_WEIGHTS), list(KIND_WEIGHTS.values())
        first = True
        while time.monotonic() < self.deadline:
            # Client i starts with kind i, so that with as many clients as kinds every kind is sent at once.
            kind = kinds[self.index % len(kinds)] if first else self.rng.choices(kinds, weights)[0]
            first = False
            if kind in DISCONNECT_KINDS:
                self.run_disconnect(kind)
            elif kind == "repeat":
                self.run_repeat()
            else:
                self.one(kind, self.rng.choice(self.pool[kind]))

    def one(self, kind, req):
        """Sends `req`, checks its answer; returns its cached flags (None when it failed)."""
        rid = self.request_id()
        with self.stats.lock:
            self.stats.kinds[kind].sent += 1
        started = time.monotonic()
        if self.conn is not None and started - self.last_used > REUSE_IDLE_LIMIT:
            self.conn.close()
            self.conn = None
            with self.stats.lock:
                self.stats.idle_reopens += 1
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            status, echoed, payload = send(self.conn, req, rid)
        except (OSError, http.client.HTTPException) as e:
            self.conn = None
            self.stats.fail(kind, "connection_errors", f"{req.name}: {type(e).__name__}: {e}")
            return None
        self.last_used = time.monotonic()
        seconds = self.last_used - started
        if problem := check(req, status, echoed, payload, rid, self.reference):
            self.stats.fail(kind, *problem)
            return None
        flags = cached_flags(payload) if req.path == "/v1/logprobs" and status == 200 else []
        self.stats.done(kind, seconds, hits=int(bool(flags) and all(flags)))
        return flags

    def run_repeat(self):
        """A scoring request twice in a row: when the first was computed, the second must be a cache hit (the
        entry is younger than the cache TTL) — and both must carry the idle server's bits."""
        req = self.rng.choice(self.pool["score"] + self.pool["batch"])
        first = self.one("repeat", req)
        if first is None:
            return
        first_done = time.monotonic()
        second = self.one("repeat", req)
        if second is None or any(first) or time.monotonic() - first_done > self.cache_ttl / 2:
            return
        with self.stats.lock:
            self.stats.fresh_repeats += 1
        if not all(second):
            with self.stats.lock:
                self.stats.fresh_repeat_misses += 1
            self.stats.fail("repeat", "mismatches", f"{req.name}: computed, then not a cache hit: {second}")

    def run_disconnect(self, kind):
        """Fresh content (never cached) so the server has work to drop when the client goes away. Prompts stay
        under the 16 tokens that whole-prompt reuse keeps, so unique prompts do not fill its store (bounded,
        but a growth that would hide a leak); the work is in the long responses."""
        nonce = f"{self.index}.{self.n}"
        policy = self.rng.choice(["smol", "gemma", "smol-t07", "gemma-t05"])
        if kind == "disconnect_score":
            items = [{"prompt": f"Note {nonce}/{j}:", "response": LONG_PROMPT} for j in range(4)]
            req = post(kind, kind, "/v1/logprobs", {"model": policy, "items": items})
        else:
            body = {"model": policy, "prompt": f"Story {nonce}:", "max_tokens": 64, "seed": 1, "stream": True}
            req = post(kind, kind, "/v1/completions", body, stream=True)
        with self.stats.lock:
            self.stats.kinds[kind].sent += 1
        started = time.monotonic()
        try:
            status_line = disconnect(self.port, req, self.request_id(), self.rng.uniform(0, 0.5),
                                     first_event=kind == "disconnect_stream")
        except OSError as e:
            self.stats.fail(kind, "connection_errors", f"{kind}: {type(e).__name__}: {e}")
            return
        if kind == "disconnect_stream" and not status_line.startswith(b"HTTP/1.1 200"):
            self.stats.fail(kind, "unexpected_status", f"{kind}: {status_line!r}")
            return
        self.stats.done(kind, time.monotonic() - started)


def record_reference(port, pool):
    """Each request of the pool once, one at a time, on the idle server: the answers everything is held to."""
    reference, conn = {}, http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    for reqs in pool.values():
        for req in reqs:
            status, _, payload = send(conn, req, f"reference-{req.name}")
            if req.expect_error:
                if problem := error_shape_problem(status, payload):
                    raise SystemExit(f"reference {req.name}: {problem}")
            elif status != 200:
                raise SystemExit(f"reference {req.name}: {status} {payload[:300]!r}")
            reference[req.name] = normal_answer(req, status, payload)
    conn.close()
    valid = [json.dumps(reference[r.name]) for reqs in pool.values() for r in reqs if not r.expect_error]
    if len(set(valid)) != len(valid):
        raise SystemExit("two different requests of the pool have the same answer: a swap would go unseen")
    return reference


def recheck_idle(port, pool, reference):
    """After the load: every request once more, one at a time; the names of those whose answer changed."""
    conn, changed = http.client.HTTPConnection("127.0.0.1", port, timeout=600), []
    for reqs in pool.values():
        for req in reqs:
            status, _, payload = send(conn, req, f"recheck-{req.name}")
            if normal_answer(req, status, payload) != reference[req.name]:
                changed.append(req.name)
    conn.close()
    return changed


class Sampler(threading.Thread):
    """Samples the server's RSS, fds and threads every `every` seconds while the clients run."""

    def __init__(self, pid, stats, every, started):
        super().__init__(daemon=True)
        self.pid, self.stats, self.every, self.started = pid, stats, every, started
        self.samples, self.stop = [], threading.Event()

    def take(self, phase):
        rss, fds, threads = proc_sample(self.pid)
        self.samples.append({"t_s": round(time.monotonic() - self.started, 1), "phase": phase, "rss_kib": rss,
                             "fds": fds, "threads": threads, "answered": self.stats.total_answered()})

    def run(self):
        while not self.stop.wait(self.every):
            self.take("load")
            s = self.samples[-1]
            if len(self.samples) % 12 == 1:  # a progress line a minute (at the default 5 s)
                print(f"  {s['t_s']:6.0f} s: {s['answered']} answered, RSS {s['rss_kib'] / 1024:.1f} MiB, "
                      f"{s['fds']} fds, {s['threads']} threads", flush=True)


# --- verdict and report -----------------------------------------------------------------------------------


def judge(kinds, samples, warmup_s, rss_bound_kib, fresh_repeat_misses, idle_changes, exit_code):
    """The failures of a run (an empty list: it passed). `kinds` maps kind → Tally-like dict, `samples` are the
    sampler's rows: 'idle' (before the load), 'load' (every few seconds), 'settled' (after the clients)."""
    failures = []
    total = lambda key: sum(t[key] for t in kinds.values())  # noqa: E731
    for key, what in [("server_errors", "5xx answers"), ("mismatches", "answers not the idle server's"),
                      ("connection_errors", "connection errors"), ("unexpected_status", "unexpected statuses")]:
        if total(key):
            failures.append(f"{total(key)} {what}")
    for kind, t in kinds.items():
        if t["answered"] == 0:
            failures.append(f"no {kind} request was answered")
    if kinds.get("repeat", {}).get("cache_hits", 0) == 0:
        failures.append("no cache hit was seen")
    if fresh_repeat_misses:
        failures.append(f"{fresh_repeat_misses} repeats of a just-computed request were not cache hits")
    if idle_changes:
        failures.append(f"after the load the idle server answered differently: {idle_changes}")
    if exit_code != 0:
        failures.append(f"the server exited with {exit_code} on SIGTERM")
    idle = [s for s in samples if s["phase"] == "idle"]
    load = [s for s in samples if s["phase"] == "load"]
    settled = [s for s in samples if s["phase"] == "settled"]
    warm = [s for s in load if s["t_s"] <= warmup_s]
    after = [s for s in load if s["t_s"] > warmup_s]
    if not (idle and warm and after and settled):
        return failures + ["too few samples to judge memory, fds and threads (run longer)"]
    growth = max(s["rss_kib"] for s in after) - max(s["rss_kib"] for s in warm)
    if growth >= rss_bound_kib:
        failures.append(f"resident memory rose {growth} KiB above its warm-up high-water mark "
                        f"(bound {rss_bound_kib} KiB)")
    end = settled[-1]
    if end["fds"] > idle[-1]["fds"]:
        failures.append(f"open fds {end['fds']} after the load, {idle[-1]['fds']} before it")
    if end["fds"] > max(s["fds"] for s in after):
        failures.append(f"open fds {end['fds']} at the end, above their post-warm-up max")
    if end["threads"] > max(s["threads"] for s in after):
        failures.append(f"threads {end['threads']} at the end, above their post-warm-up max")
    return failures


def pct_ms(values, q):
    """The q-th percentile of `values` (seconds) in milliseconds; None when there are none."""
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] * 1e3, 1) if values else None


def summary(kinds, samples, warmup_s):
    """Per-kind counts and latencies, and the memory/fd/thread curve in a few numbers."""
    rows = {}
    for kind, t in kinds.items():
        rows[kind] = {k: v for k, v in t.__dict__.items() if not k.endswith("latencies")}
        rows[kind]["p50_ms"] = pct_ms(t.latencies, 50)
        rows[kind]["p99_ms"] = pct_ms(t.latencies, 99)
        rows[kind]["hit_p50_ms"] = pct_ms(t.hit_latencies, 50)
    load = [s for s in samples if s["phase"] == "load"]
    warm = [s for s in load if s["t_s"] <= warmup_s] or load
    after = [s for s in load if s["t_s"] > warmup_s] or load
    mib = lambda kib: round(kib / 1024, 1)  # noqa: E731
    curve = {
        "rss_mib": {"idle": mib(samples[0]["rss_kib"]), "warmup_max": mib(max(s["rss_kib"] for s in warm)),
                    "after_warmup_first": mib(after[0]["rss_kib"]), "end_of_load": mib(load[-1]["rss_kib"]),
                    "max": mib(max(s["rss_kib"] for s in load)), "settled": mib(samples[-1]["rss_kib"])},
        "fds": {"idle": samples[0]["fds"], "after_warmup_max": max(s["fds"] for s in after),
                "settled": samples[-1]["fds"]},
        "threads": {"idle": samples[0]["threads"], "after_warmup_max": max(s["threads"] for s in after),
                    "settled": samples[-1]["threads"]},
    }
    if len(after) >= 2:
        xs, ys = [s["t_s"] / 60 for s in after], [s["rss_kib"] / 1024 for s in after]
        curve["rss_mib"]["slope_after_warmup_mib_per_min"] = round(statistics.linear_regression(xs, ys).slope, 3)
    return rows, curve


def print_table(rows, curve, seconds, clients):
    print(f"\nsoak: {clients} clients, {seconds:.0f} s")
    print("| kind | answered | mismatches | 5xx | conn. errors | unexpected | p50 ms | p99 ms | cache hits | hit p50 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, r in rows.items():
        print(f"| {kind} | {r['answered']} | {r['mismatches']} | {r['server_errors']} | {r['connection_errors']} "
              f"| {r['unexpected_status']} | {r['p50_ms']} | {r['p99_ms']} | {r['cache_hits']} | {r['hit_p50_ms'] or '–'} |")
    for what, values in curve.items():
        print(f"{what}: " + ", ".join(f"{k} {v}" for k, v in values.items()))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", type=Path, default=Path(os.environ.get(
        "LLAMA_SCORER_BIN", ROOT / "target" / "release" / "llama-scorer")))
    p.add_argument("--models", type=Path, default=Path(os.environ.get("LLAMA_SCORER_MODELS", ROOT / "models")))
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--duration", type=float, default=600, help="seconds of load")
    p.add_argument("--sample-every", type=float, default=5, help="seconds between RSS/fd/thread samples")
    p.add_argument("--warmup", type=float, default=0.2, help="fraction of the run that is warm-up")
    p.add_argument("--rss-bound-mib", type=float, default=16,
                   help="how far RSS may rise after warm-up above the warm-up high-water mark")
    p.add_argument("--cache-ttl", type=int, default=20,
                   help="response cache TTL (s): entries expire, so the pool is computed again and again")
    p.add_argument("--settle", type=float, default=15,
                   help="seconds after the clients stop before the final sample (idle runtime threads exit "
                        "after 10 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "target" / "soak")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    config = Path(tempfile.mkdtemp(prefix="soak-")) / "config.yaml"
    write_config(config, args.models, args.cache_ttl)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = start_server(args.binary, config, port, args.out / "server.log")
    try:
        pool = build_pool()
        t0 = time.monotonic()
        reference = record_reference(port, pool)
        (args.out / "reference.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False) + "\n")
        print(f"reference: {sum(map(len, pool.values()))} requests recorded one at a time in "
              f"{time.monotonic() - t0:.1f} s", flush=True)
        stats = Stats(KIND_WEIGHTS)
        started = time.monotonic()
        sampler = Sampler(proc.pid, stats, args.sample_every, started)
        sampler.take("idle")
        clients = [Client(i, port, pool, reference, stats, started + args.duration, args.seed, args.cache_ttl)
                   for i in range(args.clients)]
        for c in clients + [sampler]:
            c.start()
        for c in clients:
            c.join()
        for c in clients:
            if c.conn is not None:
                c.conn.close()
        sampler.stop.set()
        sampler.join()
        seconds = time.monotonic() - started
        time.sleep(args.settle)
        sampler.take("settled")
        ready = get_json(port, "/ready")
        idle_changes = recheck_idle(port, pool, reference)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            exit_code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            exit_code = "hung after SIGTERM"
    rows, curve = summary(stats.kinds, sampler.samples, args.duration * args.warmup)
    failures = judge(rows, sampler.samples, args.duration * args.warmup, args.rss_bound_mib * 1024,
                     stats.fresh_repeat_misses, idle_changes, exit_code)
    report = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seconds": round(seconds, 1),
        "kinds": rows,
        "curve": curve,
        "fresh_repeats": stats.fresh_repeats,
        "idle_reopens": stats.idle_reopens,
        "server": {"cache": ready.get("cache"),
                   "models": [{k: m.get(k) for k in ("path", "abandoned_jobs", "prefix_reuse")}
                              for m in ready.get("models", [])],
                   "exit_code": exit_code},
        "failures": failures,
        "examples": stats.examples,
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    with open(args.out / "samples.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(sampler.samples[0]))
        w.writeheader()
        w.writerows(sampler.samples)
    print_table(rows, curve, seconds, args.clients)
    print(f"server: cache {ready.get('cache')}, abandoned jobs "
          f"{[m.get('abandoned_jobs') for m in ready.get('models', [])]}, exit {exit_code}")
    print(f"clients: {stats.idle_reopens} keep-alive connections idle over {REUSE_IDLE_LIMIT} s opened afresh")
    print(f"report: {args.out / 'report.json'}, samples: {args.out / 'samples.csv'}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        for e in stats.examples[:10]:
            print(f"  e.g. {e}")
        return 1
    print("PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
