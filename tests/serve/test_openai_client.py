"""The official `openai` client against a real server: completions, chat, streaming, model listing."""

from __future__ import annotations

import openai
import pytest

from tests.serve.conftest import BASE, greedy_reference
from tests.train.conftest import make_tokenizer


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_lists_base_and_adapters_with_parent(client):
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {BASE, "alpha", "beta", "gamma"}  # root/spare is not an adapter: skipped
    assert models["alpha"].parent == BASE
    assert models["alpha"].num_virtual_tokens == 4
    assert getattr(models[BASE], "parent", None) is None


@pytest.mark.parametrize("model", [BASE, "alpha", "beta", "gamma"])
def test_completion_equals_offline_greedy(client, adapter_root, model):
    prompt = "hello world"
    out = client.completions.create(model=model, prompt=prompt, max_tokens=6, temperature=0)
    ids = make_tokenizer()(prompt)["input_ids"]
    expected = greedy_reference(None if model == BASE else adapter_root / model, ids, 6)
    assert out.choices[0].text == make_tokenizer().decode(expected, skip_special_tokens=True)
    assert out.usage.prompt_tokens == len(ids)
    assert out.usage.completion_tokens == len(expected)
    assert out.choices[0].finish_reason in ("length", "stop")


def test_adapters_change_the_output(client):
    texts = {
        m: client.completions.create(model=m, prompt="abc", max_tokens=8, temperature=0).choices[0].text
        for m in (BASE, "alpha", "beta", "gamma")
    }
    assert len(set(texts.values())) > 1


def test_streaming_completion_concatenates_to_the_whole(client):
    whole = client.completions.create(model="alpha", prompt="stream me", max_tokens=8, temperature=0)
    chunks = list(
        client.completions.create(
            model="alpha",
            prompt="stream me",
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_chat_and_chat_streaming(client):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    whole = client.chat.completions.create(model="gamma", messages=messages, max_tokens=6, temperature=0)
    assert whole.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model="gamma", messages=messages, max_tokens=6, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_seeded_sampling_is_reproducible(client):
    kwargs = dict(model="beta", prompt="seed", max_tokens=8, temperature=1.0, top_p=0.9, seed=1234)
    a = client.completions.create(**kwargs).choices[0].text
    b = client.completions.create(**kwargs).choices[0].text
    assert a == b


def test_stop_string_cuts_the_output(client):
    full = client.completions.create(model=BASE, prompt="xyz", max_tokens=10, temperature=0).choices[0].text
    if len(full) < 4:
        pytest.skip("the random model stopped early")
    stop = full[2:4]
    out = client.completions.create(model=BASE, prompt="xyz", max_tokens=10, temperature=0, stop=[stop])
    assert out.choices[0].text == full[: full.index(stop)]
    assert out.choices[0].finish_reason == "stop"
