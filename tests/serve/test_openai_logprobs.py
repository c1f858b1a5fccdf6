"""Logprobs over real HTTP with the `openai` client: equal to log_softmax of the no-cache forward (completions,
chat, echoed prompts, chunked prefill), streams equal whole responses, stop strings, mixed batches."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
import torch

from tests.serve.conftest import BASE, LiveServer, greedy_tokens, reference_logprobs, serve_config
from tests.train.conftest import SPECIALS, make_tokenizer

TOL = 1e-4
TOKENIZER = make_tokenizer()
SPECIAL_STRINGS = frozenset(SPECIALS)


def token_string(token_id: int) -> str:
    return TOKENIZER.decode([token_id], skip_special_tokens=False)


def expected_top(row: torch.Tensor, k: int, chosen: int) -> dict[str, float]:
    """The legacy top_logprobs dict: the k best by string (the higher logprob kept), plus the chosen token."""
    top = row.topk(k)
    ranked = list(zip(top.indices.tolist(), top.values.tolist(), strict=True))
    if chosen not in top.indices.tolist():
        ranked.append((chosen, float(row[chosen])))
    out: dict[str, float] = {}
    for i, v in sorted(ranked, key=lambda p: -p[1]):
        out.setdefault(token_string(i), v)
    return out


def assert_top_dict(got: dict[str, float], row: torch.Tensor, k: int, chosen: int) -> None:
    want = expected_top(row, k, chosen)
    assert list(got) == list(want)  # the same strings, most likely first
    assert list(got.values()) == sorted(got.values(), reverse=True)
    for token, value in got.items():
        assert abs(value - want[token]) <= TOL


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.mark.parametrize("model", [BASE, "alpha", "beta", "gamma"])
def test_completion_logprobs_equal_the_no_cache_forward(client, adapter_root, model):
    prompt, k = "logprobs of", 5
    out = client.completions.create(model=model, prompt=prompt, max_tokens=6, temperature=0, logprobs=k)
    ids = TOKENIZER(prompt)["input_ids"]
    adapter = None if model == BASE else adapter_root / model
    generated = greedy_tokens(adapter, ids, 6)
    ref = reference_logprobs(adapter, ids + generated)
    lp = out.choices[0].logprobs
    assert lp.tokens == [token_string(t) for t in generated]
    assert len(lp.token_logprobs) == len(lp.top_logprobs) == out.usage.completion_tokens == len(generated)
    for i, token in enumerate(generated):
        row = ref[len(ids) - 1 + i]
        assert abs(lp.token_logprobs[i] - float(row[token])) <= TOL
        assert_top_dict(lp.top_logprobs[i], row, k, token)
        assert lp.top_logprobs[i][lp.tokens[i]] == pytest.approx(lp.token_logprobs[i], abs=TOL)
    lengths = [len(t) for t in lp.tokens]
    assert lp.text_offset == [sum(lengths[:i]) for i in range(len(lengths))]


def test_chat_logprobs_equal_the_no_cache_forward(client, adapter_root):
    messages = [{"role": "user", "content": "score me"}]
    out = client.chat.completions.create(
        model="beta", messages=messages, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
    )
    ids = TOKENIZER(TOKENIZER.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))["input_ids"]
    generated = greedy_tokens(adapter_root / "beta", ids, 5)
    ref = reference_logprobs(adapter_root / "beta", ids + generated)
    content = out.choices[0].logprobs.content
    assert [c.token for c in content] == [token_string(t) for t in generated]
    for i, (entry, token) in enumerate(zip(content, generated, strict=True)):
        row = ref[len(ids) - 1 + i]
        assert abs(entry.logprob - float(row[token])) <= TOL
        assert entry.bytes == list(entry.token.encode("utf-8"))
        assert len(entry.top_logprobs) == 3  # exactly the requested size
        best = row.topk(3)
        assert [t.token for t in entry.top_logprobs] == [token_string(i) for i in best.indices.tolist()]
        values = [t.logprob for t in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert values == pytest.approx(best.values.tolist(), abs=TOL)
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=TOL)  # greedy: chosen is best


def test_chat_without_top_logprobs_and_top_logprobs_without_logprobs(client):
    messages = [{"role": "user", "content": "hi"}]
    out = client.chat.completions.create(model=BASE, messages=messages, max_tokens=3, temperature=0, logprobs=True)
    assert all(entry.top_logprobs == [] for entry in out.choices[0].logprobs.content)
    plain = client.chat.completions.create(model=BASE, messages=messages, max_tokens=3, temperature=0)
    assert plain.choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=BASE, messages=messages, max_tokens=3, top_logprobs=2)
    assert "logprobs=true" in info.value.body["message"]


def test_sampled_token_is_reported_also_outside_the_top_k(client):
    out = client.completions.create(model="alpha", prompt="hot", max_tokens=12, temperature=2.0, seed=3, logprobs=1)
    lp = out.choices[0].logprobs
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert 1 <= len(top) <= 2
        assert top[token] >= value - TOL  # higher only if the best token decodes to the same string
        if len(top) == 2:  # the sampled token was not the most likely: added with its own logprob
            assert top[token] == pytest.approx(value, abs=TOL) and max(top.values()) > value
    assert any(len(top) == 2 for top in lp.top_logprobs)  # at temperature 2 some token is not the most likely


def concat_completion_chunks(chunks: list, index: int = 0) -> tuple[str, dict]:
    text, merged = "", {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for chunk in chunks:
        for choice in chunk.choices:
            if choice.index != index:
                continue
            text += choice.text
            for key in merged:
                merged[key] += getattr(choice.logprobs, key)
    return text, merged


@pytest.mark.parametrize("echo", [False, True])
def test_completion_stream_equals_whole(client, echo):
    kwargs = dict(model="gamma", prompt="stream lp", max_tokens=7, temperature=0, logprobs=2, echo=echo)
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(**kwargs, stream=True))
    text, merged = concat_completion_chunks(chunks)
    assert text == whole.choices[0].text
    assert merged == whole.choices[0].logprobs.model_dump()
    if echo:
        assert chunks[0].choices[0].text.startswith("stream lp")  # the echo comes in the first chunk


def test_chat_stream_equals_whole(client):
    kwargs = dict(model="alpha", messages=[{"role": "user", "content": "x"}], max_tokens=6, temperature=0)
    whole = client.chat.completions.create(**kwargs, logprobs=True, top_logprobs=4)
    chunks = list(client.chat.completions.create(**kwargs, logprobs=True, top_logprobs=4, stream=True))
    content = [e for c in chunks for ch in c.choices if ch.logprobs for e in ch.logprobs.content]
    assert [e.model_dump() for e in content] == [e.model_dump() for e in whole.choices[0].logprobs.content]
    assert "".join(ch.delta.content or "" for c in chunks for ch in c.choices) == whole.choices[0].message.content


def test_a_stop_string_cuts_the_text_but_reports_tokens_up_to_the_one_that_completed_it(client):
    kwargs = dict(model=BASE, prompt="stop lp", max_tokens=10, temperature=0, logprobs=0)
    full = client.completions.create(**kwargs)
    text = full.choices[0].text
    if len(text) < 5:
        pytest.skip("the random model stopped early")
    stop = text[2:4]
    cut = client.completions.create(**kwargs, stop=[stop])
    lp = cut.choices[0].logprobs
    assert cut.choices[0].text == text[: text.index(stop)]
    # Character tokenizer: the text is the tokens' strings without the special tokens; n tokens complete the stop.
    visible = ["" if t in SPECIAL_STRINGS else t for t in full.choices[0].logprobs.tokens]
    n = next(i for i in range(len(visible) + 1) if stop in "".join(visible[:i]))
    assert lp.tokens == full.choices[0].logprobs.tokens[:n] and len(lp.tokens) == cut.usage.completion_tokens
    assert lp.token_logprobs == full.choices[0].logprobs.token_logprobs[:n]
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert top == {token: value}  # logprobs=0: no alternatives, only the chosen token (OpenAI: k + 1 at most)
    stream = list(client.completions.create(**kwargs, stop=[stop], stream=True))
    streamed_text, merged = concat_completion_chunks(stream)
    assert streamed_text == cut.choices[0].text and merged == lp.model_dump()


def assert_prompt_logprobs(choice, prompt: str, adapter) -> None:
    ids = TOKENIZER(prompt)["input_ids"]
    lp = choice.logprobs
    assert choice.text.startswith(prompt)
    assert lp.tokens[: len(ids)] == [token_string(t) for t in ids]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing predicts the first token
    ref = reference_logprobs(adapter, ids)
    for p in range(1, len(ids)):
        assert abs(lp.token_logprobs[p] - float(ref[p - 1, ids[p]])) <= TOL, p
        assert_top_dict(lp.top_logprobs[p], ref[p - 1], 3, ids[p])


def test_echo_with_logprobs_gives_the_prompt_logprobs(client, adapter_root):
    prompt = "echo this prompt"
    out = client.completions.create(model="alpha", prompt=prompt, max_tokens=3, temperature=0, logprobs=3, echo=True)
    assert_prompt_logprobs(out.choices[0], prompt, adapter_root / "alpha")
    assert out.usage.prompt_tokens == len(prompt) and out.usage.completion_tokens == 3


def test_echo_logprobs_of_a_prompt_chunked_by_the_scheduler(adapter_root):
    live = LiveServer(serve_config(adapter_root, max_num_seqs=2, max_num_batched_tokens=4)).start()
    try:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        prompt = "a prompt spread over many prefill chunks"  # 41 tokens, 4 per step
        out = client.completions.create(model="beta", prompt=prompt, max_tokens=2, temperature=0, logprobs=3, echo=True)
        assert_prompt_logprobs(out.choices[0], prompt, adapter_root / "beta")
        chunks = list(
            client.completions.create(
                model="beta", prompt=prompt, max_tokens=2, temperature=0, logprobs=3, echo=True, stream=True
            )
        )
        text, merged = concat_completion_chunks(chunks)
        assert text == out.choices[0].text and merged == out.choices[0].logprobs.model_dump()
    finally:
        live.stop()


def test_only_the_asking_request_changes_in_a_mixed_batch(server):
    plain = [{"model": m, "prompt": f"mixed {m}", "max_tokens": 8, "temperature": 0} for m in (BASE, "beta", "gamma")]
    asking = {"model": "alpha", "prompt": "asks for logprobs", "max_tokens": 8, "temperature": 0}
    asking |= {"logprobs": 5, "echo": True}

    async def run() -> tuple[list[dict], list[dict]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            together = await asyncio.gather(*(c.post("/v1/completions", json=b) for b in [*plain, asking]))
            alone = [await c.post("/v1/completions", json=b) for b in [*plain, asking]]
        return [r.json() for r in together], [r.json() for r in alone]

    together, alone = asyncio.run(run())
    for a, b in zip(together, alone, strict=True):
        assert a["choices"][0]["text"] == b["choices"][0]["text"]
        assert a["usage"] == b["usage"]
    assert all(r["choices"][0]["logprobs"] is None for r in together[:3])
    got, want = together[3]["choices"][0]["logprobs"], alone[3]["choices"][0]["logprobs"]
    assert got["tokens"] == want["tokens"]
    assert got["token_logprobs"][1:] == pytest.approx(want["token_logprobs"][1:], abs=TOL)
