"""EleutherAI's lm-evaluation-harness against the server, run as its users run it: the pinned release's CLI
(`lm_eval`, from its own venv, see requirements-lm-eval.txt) with only `base_url` (and `model` where the
backend sends one), offline, on the small tasks in lm_eval_tasks/. Every log-likelihood lm-eval reports is
checked against the native /v1/logprobs of the same token split, and each task's acc/acc_norm against the
float64 reference computed from those."""

import glob
import json
import os
import subprocess
from pathlib import Path

import pytest
import requests

from conftest import BINARY, ROOT, SMOL, _free_port, serving

LM_EVAL_PYTHON = Path(os.environ.get("LM_EVAL_PYTHON", ROOT / ".venv-lmeval" / "bin" / "python"))
TASKS = ROOT / "tests" / "python" / "lm_eval_tasks"
MODEL = "smol"
# The log-likelihoods lm-eval reports must be the native API's, to this many nats.
TOL = 1e-9
MC_TASKS = ("scorer_mc", "scorer_mc_nodelim")


@pytest.fixture(scope="module")
def one_model_server():
    """A server with one policy (`smol`) and no API key, as a user starts it for lm-eval."""
    for f in (BINARY, SMOL, LM_EVAL_PYTHON):
        if not f.exists():
            pytest.fail(f"{f} is missing: run `make build`, scripts/fetch-models.sh and `make test-python`")
    with serving(["--model", str(SMOL), "--alias", MODEL], _free_port(), "lm-eval") as base:
        yield base


def lm_eval(args, out):
    """Runs lm-eval's CLI offline on the project's tasks; returns (results, samples by task)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_CACHE=str(out / "hf"), OPENAI_API_KEY="")
    cmd = [str(LM_EVAL_PYTHON), "-m", "lm_eval", *args,
           "--include_path", str(TASKS), "--output_path", str(out), "--log_samples"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    results = json.load(open(glob.glob(str(out / "**" / "results_*.json"), recursive=True)[0]))
    samples = {}
    for f in glob.glob(str(out / "**" / "samples_*.jsonl"), recursive=True):
        task = Path(f).name[len("samples_"):].rsplit("_", 1)[0]
        samples[task] = [json.loads(line) for line in open(f)]
    return results["results"], samples


def tokenize(base, text, add_special):
    r = requests.post(base + "/tokenize", json={"prompt": text, "add_special_tokens": add_special}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def native(base, prompt_ids, response_ids):
    """The native API's log-likelihood of `response_ids` after `prompt_ids` (float64 sum), and the tokens."""
    r = requests.post(base + "/v1/logprobs", json={"model": MODEL, "prompt_token_ids": prompt_ids,
                                                   "response_token_ids": response_ids}, timeout=600)
    assert r.status_code == 200, r.text
    d = r.json()["data"][0]
    return d["logprob"], d["logprobs"]["content"]


def harness_split(base, context, continuation):
    """lm-eval's own split for API models: the context's trailing spaces moved to the continuation, the
    whole text tokenized jointly, the continuation being what follows the context's tokens."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole = tokenize(base, context + continuation, False)
    ctx = tokenize(base, context, False)
    return whole[: len(ctx)], whole[len(ctx):]


def by_offset_split(base, context, continuation):
    """lm-eval 0.4's `gguf` split: the text tokenized as the server tokenizes a prompt, the continuation being
    the tokens whose character offset (that of the character holding their first byte) is past the context."""
    text = context + continuation
    ids = tokenize(base, text, True)
    _, rest = native(base, ids[:1], ids[1:])
    tail = b"".join(bytes(t["bytes"]) for t in rest)
    raw = text.encode()
    assert raw.endswith(tail)
    starts, at = [0], len(raw) - len(tail)
    for t in rest:
        starts.append(at)
        at += len(t["bytes"])
    offsets = [len(raw[:s].decode("utf-8", errors="ignore")) for s in starts]
    # A token straddling the end of the context counts as context; with a context ending in a space and no
    # target delimiter, that leaves nothing to score (lm-eval 0.4's `gguf` then reports 0.0).
    k = next((i for i, o in enumerate(offsets) if o >= len(context)), len(ids))
    return ids[:k], ids[k:]


def check_loglikelihoods(base, results, samples, split, tasks):
    """Every request's log-likelihood equals the native API's on the same split, and acc/acc_norm equal the
    float64 reference computed from the native numbers."""
    for task in tasks:
        acc, acc_norm = [], []
        for s in samples[task]:
            lls = []
            for i, resp in enumerate(s["resps"]):
                args = s["arguments"][f"gen_args_{i}"]
                ctx, cont = split(base, args["arg_0"], args["arg_1"])
                ref = native(base, ctx, cont)[0] if cont else 0.0
                got = float(resp[0][0])
                assert abs(got - ref) <= TOL, f"{task} doc {s['doc_id']} choice {i}: lm-eval {got}, native {ref}"
                lls.append(ref)
            choices, gold = s["doc"]["choices"], s["doc"]["gold"]
            acc.append(float(max(range(len(lls)), key=lambda j: lls[j]) == gold))
            norm = [ll / len(c) for ll, c in zip(lls, choices)]
            acc_norm.append(float(max(range(len(norm)), key=lambda j: norm[j]) == gold))
        assert results[task]["acc,none"] == pytest.approx(sum(acc) / len(acc), abs=1e-12), task
        assert results[task]["acc_norm,none"] == pytest.approx(sum(acc_norm) / len(acc_norm), abs=1e-12), task


def check_generations(base, samples, task, strip, max_tokens=8):
    """Each generation is the server's own greedy answer to the same prompt (lm-eval 0.4's `gguf` sends no
    `max_tokens`: the server's default, 16)."""
    for s in samples[task]:
        prompt = s["arguments"]["gen_args_0"]["arg_0"]
        r = requests.post(base + "/v1/completions", json={"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                                                          "stop": ["\n", "."]}, timeout=600)
        assert r.status_code == 200, r.text
        want = r.json()["choices"][0]["text"]
        got = s["resps"][0][0]
        assert (got.strip() if strip else got) == (want.strip() if strip else want), (prompt, got, want)


def test_local_completions_token_ids_batched(one_model_server, tmp_path):
    base = one_model_server
    results, samples = lm_eval(
        ["--model", "local-completions", "--model_args", f"model={MODEL},base_url={base}/v1/completions",
         "--batch_size", "4", "--tasks", "scorer_mc,scorer_mc_nodelim,scorer_rolling,scorer_gen"], tmp_path)
    check_loglikelihoods(base, results, samples, harness_split, MC_TASKS)
    info = requests.get(base + "/tokenizer_info", timeout=10).json()
    prefix = tokenize(base, info["bos_token"], False)[0]
    for s in samples["scorer_rolling"]:
        ref, _ = native(base, [prefix], tokenize(base, s["doc"]["text"], False))
        got = float(s["resps"][0][0])
        assert abs(got - ref) <= TOL, (s["doc"], got, ref)
    check_generations(base, samples, "scorer_gen", strip=False)


def test_local_completions_text_prompts(one_model_server, tmp_path):
    base = one_model_server
    results, samples = lm_eval(
        ["--model", "local-completions",
         "--model_args", f"model={MODEL},base_url={base}/v1/completions,tokenized_requests=False",
         "--batch_size", "4", "--tasks", "scorer_mc_nodelim"], tmp_path)
    check_loglikelihoods(base, results, samples, harness_split, ["scorer_mc_nodelim"])


def test_gguf_release(one_model_server, tmp_path):
    base = one_model_server
    results, samples = lm_eval(
        ["--model", "gguf", "--model_args", f"base_url={base}", "--tasks", "scorer_mc,scorer_mc_nodelim,scorer_gen"],
        tmp_path)
    check_loglikelihoods(base, results, samples, by_offset_split, MC_TASKS)
    check_generations(base, samples, "scorer_gen", strip=True, max_tokens=16)


def test_local_chat_completions_generation(one_model_server, tmp_path):
    base = one_model_server
    results, samples = lm_eval(
        ["--model", "local-chat-completions", "--model_args", f"model={MODEL},base_url={base}/v1/chat/completions",
         "--apply_chat_template", "--tasks", "scorer_gen"], tmp_path)
    for s in samples["scorer_gen"]:
        arg = s["arguments"]["gen_args_0"]["arg_0"]
        # lm-eval logs the chat prompt as the JSON text of the message list, alone or inside a list.
        if isinstance(arg, list):
            assert len(arg) == 1 and isinstance(arg[0], str), arg
            arg = arg[0]
        messages = json.loads(arg)
        r = requests.post(base + "/v1/chat/completions", json={"messages": messages, "max_tokens": 8,
                                                               "temperature": 0, "stop": ["\n", "."]}, timeout=600)
        assert r.status_code == 200, r.text
        assert s["resps"][0][0] == r.json()["choices"][0]["message"]["content"], s
    assert "exact_match,none" in results["scorer_gen"]
