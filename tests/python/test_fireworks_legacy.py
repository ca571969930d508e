"""The fireworks-ai 0.x client (`fireworks.client`), pointed at llama-scorer by FIREWORKS_API_BASE, with
its strict response models (FIREWORKS_API_STRICT=1: any field it does not know is an error). Runs in the
.venv-fireworks0 virtualenv (see the Makefile); skipped where fireworks-ai 1.x is installed."""

import importlib
import importlib.metadata
import os
import sys
from typing import List, Optional

import pytest

from conftest import API_KEY, FIREWORKS_ID

if not importlib.metadata.version("fireworks-ai").startswith("0."):
    pytest.skip("needs fireworks-ai 0.x (make test runs it in .venv-fireworks0)", allow_module_level=True)


@pytest.fixture(scope="module")
def fw(server):
    os.environ["FIREWORKS_API_BASE"] = server + "/inference/v1"
    os.environ["FIREWORKS_API_STRICT"] = "1"
    for name in [m for m in sys.modules if m.startswith("fireworks")]:
        del sys.modules[name]
    client = importlib.import_module("fireworks.client")
    client.api_key = API_KEY
    allow_system_fingerprint(client)
    return client


def allow_system_fingerprint(client):
    """Strict but for one field: `system_fingerprint` (OpenAI's, which llama-scorer puts on every answer and
    model entry so results from different servers can be checked for comparability) is added to the client's
    response models; any other field they do not know is still an error."""
    api = importlib.import_module("fireworks.client.api")

    def with_fingerprint(cls):
        fields = {"__annotations__": {"system_fingerprint": Optional[str]}, "system_fingerprint": None}
        return type(cls.__name__, (cls,), fields)

    for kind, base in [(client.Completion, "CompletionResponse"), (client.ChatCompletion, "ChatCompletionResponse")]:
        kind.response_class = with_fingerprint(getattr(api, base))
        kind.stream_response_class = with_fingerprint(getattr(api, base.replace("Response", "StreamResponse")))
    model = with_fingerprint(api.Model)
    listing = type("ListModelsResponse", (api.ListModelsResponse,), {"__annotations__": {"data": List[model]}})
    sys.modules["fireworks.client.model"].ListModelsResponse = listing


def test_legacy_client_echo_scoring(fw):
    r = fw.Completion.create(model=FIREWORKS_ID, prompt="The capital of France is Paris.", max_tokens=0,
                             echo=True, logprobs=1)
    lp = r.choices[0].logprobs
    assert r.system_fingerprint.startswith("fp_")
    assert lp.token_logprobs[0] == 0.0
    assert len(lp.tokens) == r.usage.prompt_tokens
    assert lp.token_ids is not None


def test_legacy_client_generation_chat_and_streaming(fw):
    a = fw.Completion.create(model="smol", prompt="Once", max_tokens=6, seed=3, temperature=0.9)
    b = fw.Completion.create(model="smol", prompt="Once", max_tokens=6, seed=3, temperature=0.9)
    assert a.choices[0].text == b.choices[0].text
    r = fw.Completion.create(model="smol", prompt="Once", max_tokens=3, logprobs=True, top_logprobs=2)
    assert len(r.choices[0].logprobs.content) == 3
    c = fw.ChatCompletion.create(model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                 logprobs=True, top_logprobs=1)
    assert c.choices[0].message.role == "assistant"
    chunks = list(fw.Completion.create(model="smol", prompt="Once", max_tokens=4, stream=True, seed=3))
    assert "".join(ch.choices[0].text for ch in chunks) == fw.Completion.create(
        model="smol", prompt="Once", max_tokens=4, seed=3).choices[0].text
    chunks = list(fw.ChatCompletion.create(model="smol", messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=4, stream=True))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_legacy_client_models_and_errors(fw):
    models = fw.Model.list().data
    assert FIREWORKS_ID in [m.id for m in models]
    assert all(m.system_fingerprint.startswith("fp_") for m in models)
    with pytest.raises(Exception) as e:
        fw.Completion.create(model="no-such-model", prompt="x", max_tokens=0)
    assert "404" in str(e.value) or "not" in str(e.value).lower()
