"""The server's numbers against computations that share nothing with llama.cpp but the GGUF file:
token ids against independent tokenizers, log-probabilities against a float64 numpy forward pass."""

import numpy as np
import pytest

import independent_tokenizers
from conftest import GEMMA, SMOL, score
from reference_llama import LlamaReference

TEXTS = [
    "Here is a summary of this week's most recent news.",
    " Paris.",
    "\nA response that starts on a new line, with numbers 12345 and 3.14.",
    "😀 starts with an emoji",
    "東京は日本の首都です。",
    "<|im_end|> looks like a control token",
    "  two leading spaces and trailing ones  ",
    "Mixed: naïve café — “quotes” and tabs\tand\r\nCRLF.",
]


@pytest.fixture(scope="module")
def tokenizers():
    return {"smol": independent_tokenizers.smollm2(str(SMOL)), "gemma": independent_tokenizers.gemma3(str(GEMMA))}


def ids(item, start=0):
    return [t["token_id"] for t in item["logprobs"]["content"][start:]]


@pytest.mark.parametrize("policy", ["smol", "gemma"])
def test_response_token_ids_are_the_independent_tokenizers(server, tokenizers, policy):
    for text in TEXTS:
        got = ids(score(server, model=policy, prompt="Say something.", response=text))
        assert got == tokenizers[policy](text, False), f"{policy}: {text!r}"


@pytest.mark.parametrize("policy", ["smol", "gemma"])
def test_prompt_token_ids_are_the_independent_tokenizers(server, tokenizers, policy):
    prompts = ["What is the capital of France?", "Summarize the week's news. Be recent."]
    if policy == "smol":
        prompts.append("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    for prompt in prompts:
        got = ids(score(server, model=policy, prompt=prompt, response="", echo=True))
        want = tokenizers[policy](prompt, True)
        if policy == "gemma":
            want = [2] + want  # Gemma's metadata asks for BOS (id 2); SmolLM2's does not.
        assert got == want, f"{policy}: {prompt!r}"


CASES = [
    ("The capital of France is Paris. The capital of Germany is", " Berlin. The capital of Italy is Rome."),
    (
        "<|im_start|>user\nWrite a haiku about autumn.<|im_end|>\n<|im_start|>assistant\n",
        "Crimson leaves falling,\nwhispers of the cooling wind,\nthe year exhales slow.",
    ),
    ("def fibonacci(n):\n    ", "if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)"),
]


@pytest.fixture(scope="module")
def reference():
    return LlamaReference(str(SMOL))


def test_logprobs_match_a_float64_forward_pass(server, reference):
    """Per-token agreement within llama.cpp's own noise (quantized activations, f16 KV cache): DESIGN.md
    measured a mean of 0.053-0.068 nats and a maximum of 0.26-0.74 against this kind of reference."""
    diffs, shifted = [], []
    for prompt, response in CASES:
        item = score(server, model="smol", prompt=prompt, response=response, echo=True)
        toks = ids(item)
        got = np.array([t["logprob"] for t in item["logprobs"]["content"][1:]])
        want = np.array(reference.token_logprobs(toks, 1))
        diffs.append(np.abs(got - want))
        # The same comparison one position off — what a misaligned scorer would report.
        shifted.append(np.abs(got[1:] - want[:-1]))
        # The response total the server reports is the sum over the response positions.
        n_prompt = item["prompt_tokens"]
        assert item["logprob"] == pytest.approx(want[n_prompt - 1 :].sum(), abs=0.1 * len(want[n_prompt - 1 :]))
    d = np.concatenate(diffs)
    s = np.concatenate(shifted)
    print(f"\nper-token |server - float64 reference|: mean {d.mean():.4f}, max {d.max():.4f} over {len(d)} tokens")
    print(f"one position off: mean {s.mean():.3f}")
    assert d.mean() < 0.1
    assert d.max() < 1.0
    assert s.mean() > 1.0, "the check cannot tell an off-by-one scorer from a correct one"
