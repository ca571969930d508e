"""Real clients, unchanged but for the base URL: the openai SDK, the current fireworks-ai SDK, lm-eval's
request shape, the teacher-forcing recipe of Causal Judge Evaluation (CJE), and LangChain."""

import math

import openai
import pytest
import requests

from conftest import API_KEY, AUTH, FIREWORKS_ID, score

PROMPT = "The capital of France is"
RESPONSE = " Paris. The capital of Germany is Berlin."


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=API_KEY, max_retries=0)


# --- openai SDK ---------------------------------------------------------------------------------------


def test_openai_completions_echo_scoring(oai):
    r = oai.completions.create(model=FIREWORKS_ID, prompt=PROMPT + RESPONSE, max_tokens=0, echo=True, logprobs=1)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == PROMPT + RESPONSE
    assert len(lp.tokens) == len(lp.token_logprobs) == r.usage.prompt_tokens
    assert all(isinstance(x, float) and x <= 0.0 for x in lp.token_logprobs)
    assert lp.token_logprobs[0] == 0.0  # no context for the first token: a number, not None


def test_openai_seeded_generation_is_repeatable(oai):
    kw = dict(model="smol", prompt="Once upon a time", max_tokens=16, temperature=0.8, seed=42)
    a, b = oai.completions.create(**kw), oai.completions.create(**kw)
    assert a.choices[0].text == b.choices[0].text
    assert a.usage.completion_tokens == 16


def test_openai_chat_with_logprobs_and_streaming(oai):
    messages = [{"role": "user", "content": "Name a colour."}]
    r = oai.chat.completions.create(
        model="smol", messages=messages, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2
    )
    content = r.choices[0].logprobs.content
    assert "".join(c.token for c in content) == r.choices[0].message.content
    assert all(len(c.top_logprobs) == 2 and c.top_logprobs[0].logprob >= c.logprob for c in content)
    chunks = list(
        oai.chat.completions.create(
            model="smol", messages=messages, max_tokens=8, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == r.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    text = "".join(
        c.choices[0].text
        for c in oai.completions.create(model="smol", prompt="Hi", max_tokens=5, temperature=0, stream=True)
    )
    assert text == oai.completions.create(model="smol", prompt="Hi", max_tokens=5, temperature=0).choices[0].text


def test_openai_models_list(oai):
    ids = [m.id for m in oai.models.list()]
    assert ids == ["smol", "gemma", FIREWORKS_ID, "smol-short"]


def test_openai_errors_map_to_sdk_exceptions(server, oai):
    with pytest.raises(openai.NotFoundError):
        oai.completions.create(model="no-such-model", prompt="x", max_tokens=0)
    with pytest.raises(openai.BadRequestError) as e:
        oai.completions.create(model="smol", prompt="x", max_tokens=0, extra_body={"bogus": 1})
    assert "Extra inputs are not permitted" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        oai.completions.create(model="smol", prompt="x", logprobs=21)
    bad = openai.OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


# --- fireworks-ai SDK, current client ---------------------------------------------------------------


def test_fireworks_current_client_parses_every_response(server):
    from fireworks import Fireworks

    fw = Fireworks(api_key=API_KEY, base_url=server)
    r = fw.completions.create(model=FIREWORKS_ID, prompt=PROMPT + RESPONSE, max_tokens=0, echo=True, logprobs=1)
    assert r.choices[0].logprobs.token_logprobs[0] == 0.0
    r = fw.completions.create(model="smol", prompt=PROMPT, max_tokens=4, logprobs=True, top_logprobs=2, seed=1)
    assert len(r.choices[0].logprobs.content) == r.usage.completion_tokens
    r = fw.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, logprobs=True, top_logprobs=1
    )
    assert r.choices[0].message.role == "assistant"
    chunks = list(fw.completions.create(model="smol", prompt=PROMPT, max_tokens=4, stream=True, seed=1))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


# --- lm-eval's local-completions request shape ------------------------------------------------------


def test_lm_eval_loglikelihood_request_shape(server):
    """lm-eval sends token ids with max_tokens 1 and echo, then reads token_logprobs[ctxlen:-1]."""
    context = score(server, model="smol", prompt="Question: what is 2+2?\nAnswer:", response="", echo=True)
    continuation = score(server, model="smol", prompt="x", response=" 4")
    ctx_ids = [t["token_id"] for t in context["logprobs"]["content"]]
    cont_ids = [t["token_id"] for t in continuation["logprobs"]["content"]]
    body = {"model": "smol", "prompt": [ctx_ids + cont_ids], "temperature": 0, "max_tokens": 1,
            "logprobs": 1, "seed": 1234, "echo": True}
    out = requests.post(server + "/v1/completions", json=body, headers=AUTH, timeout=600).json()
    choice = out["choices"][0]
    ctxlen = len(ctx_ids)
    token_logprobs = choice["logprobs"]["token_logprobs"]
    assert len(token_logprobs) == ctxlen + len(cont_ids) + 1  # echo + one generated token
    loglik = sum(token_logprobs[ctxlen:-1])
    is_greedy = all(
        tok == max(top.values())
        for tok, top in zip(token_logprobs[ctxlen:-1], choice["logprobs"]["top_logprobs"][ctxlen:-1])
    )
    # The same sequence scored natively on the same schedule (all of it as prompt) gives the same bits.
    native = score(server, model="smol", prompt_token_ids=ctx_ids + cont_ids, response="", echo=True)
    native_values = [t["logprob"] for t in native["logprobs"]["content"]]
    assert loglik == sum(native_values[ctxlen:])
    assert isinstance(is_greedy, bool)


# --- Causal Judge Evaluation's teacher-forcing recipe -----------------------------------------------


def cje_teacher_forced(oai, model, prompt, response, temperature=1.0):
    """CJE's recipe against a Fireworks-compatible API: one echo call on prompt+response; the boundary is
    where the echoed tokens' UTF-8 bytes reach the prompt's length; else full minus prompt-only."""
    full = oai.completions.create(
        model=model, prompt=prompt + response, max_tokens=0, echo=True, logprobs=1, temperature=temperature
    ).choices[0].logprobs
    target = len(prompt.encode("utf-8"))
    running, boundary = 0, None
    for i, tok in enumerate(full.tokens):
        if running == target:
            boundary = i
            break
        running += len(tok.encode("utf-8"))
    if boundary is not None:
        return sum(full.token_logprobs[boundary:]), boundary
    alone = oai.completions.create(
        model=model, prompt=prompt, max_tokens=0, echo=True, logprobs=1, temperature=temperature
    ).choices[0].logprobs
    return sum(full.token_logprobs) - sum(alone.token_logprobs), None


def test_cje_recipe_on_a_clean_boundary(server, oai):
    value, boundary = cje_teacher_forced(oai, "smol", PROMPT, RESPONSE)
    assert boundary is not None
    native = score(server, model="smol", prompt=PROMPT, response=RESPONSE)
    # Same tokens; /v1/logprobs decodes prompt and response as two chunks, the echo call as one, and
    # llama.cpp's numbers depend on that split by a little (never by a token's worth).
    assert native["prompt_tokens"] == boundary
    assert math.isclose(value, native["logprob"], abs_tol=0.05), (value, native["logprob"])
    # On the same schedule (the whole text as prompt) the two agree to the last bit.
    same = score(server, model="smol", prompt=PROMPT + RESPONSE, response="", echo=True)
    assert value == sum(t["logprob"] for t in same["logprobs"]["content"][boundary:])


def test_cje_recipe_on_a_merged_boundary_and_the_native_answer(server, oai):
    # "Hello wor" + "ld peace": BPE makes " world" one token across the boundary.
    prompt, response = "Say it: Hello wor", "ld peace"
    value, boundary = cje_teacher_forced(oai, "smol", prompt, response)
    assert boundary is None  # the recipe cannot find the boundary and falls back to full minus prompt
    native = score(server, model="smol", prompt=prompt, response=response)
    spelled = b"".join(bytes(t["bytes"]) for t in native["logprobs"]["content"])
    assert spelled == response.encode()  # /v1/logprobs scores exactly the response's bytes
    assert math.isfinite(native["logprob"]) and native["logprob"] < 0


# --- LangChain (langchain-openai) --------------------------------------------------------------------


def test_langchain_chat_and_completions(server, oai):
    from langchain_openai import ChatOpenAI
    from langchain_openai import OpenAI as LangChainOpenAI

    question = "Name a colour."
    chat = ChatOpenAI(
        base_url=server + "/v1", api_key=API_KEY, model="smol", temperature=0, max_tokens=8, max_retries=0
    )
    msg = chat.bind(logprobs=True).invoke(question)
    direct = oai.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": question}], max_tokens=8, temperature=0
    )
    assert msg.content == direct.choices[0].message.content
    assert "".join(t["token"] for t in msg.response_metadata["logprobs"]["content"]) == msg.content
    assert "".join(chunk.content for chunk in chat.stream(question)) == msg.content

    # Echo scoring through LangChain's completions model: the same numbers as the SDK call.
    scorer = LangChainOpenAI(
        base_url=server + "/v1", api_key=API_KEY, model=FIREWORKS_ID, max_tokens=0, logprobs=1,
        temperature=1.0, max_retries=0, model_kwargs={"echo": True},
    )
    info = scorer.generate([PROMPT + RESPONSE]).generations[0][0].generation_info["logprobs"]
    sdk = oai.completions.create(
        model=FIREWORKS_ID, prompt=PROMPT + RESPONSE, max_tokens=0, echo=True, logprobs=1, temperature=1.0
    ).choices[0].logprobs
    assert info["tokens"] == sdk.tokens
    assert info["token_logprobs"] == sdk.token_logprobs
