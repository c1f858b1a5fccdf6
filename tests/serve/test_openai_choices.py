"""n choices, echo and several prompts per request over real HTTP: each choice equals the request it stands
for sent alone, usage adds up, streams interleave by index, and every sequence counts against the limits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.serve.conftest import BASE, LiveServer, serve_config
from tests.serve.test_errors_live import assert_error, wait_for_idle
from tests.train.conftest import make_tokenizer

TOKENIZER = make_tokenizer()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def alone(client: openai.OpenAI, **kwargs) -> openai.types.Completion:
    return client.completions.create(**{"n": 1, **kwargs})


def test_n_seeded_choices_each_equal_a_single_request_with_seed_plus_j(client):
    kwargs = dict(model="beta", prompt="n choices", max_tokens=8, temperature=1.0, top_p=0.95)
    out = client.completions.create(**kwargs, n=3, seed=40, logprobs=2)
    assert [c.index for c in out.choices] == [0, 1, 2]
    singles = [alone(client, **kwargs, seed=40 + j, logprobs=2) for j in range(3)]
    for choice, single in zip(out.choices, singles, strict=True):
        assert choice.text == single.choices[0].text
        assert choice.logprobs.tokens == single.choices[0].logprobs.tokens
        assert choice.logprobs.token_logprobs == pytest.approx(single.choices[0].logprobs.token_logprobs, abs=1e-5)
        assert choice.finish_reason == single.choices[0].finish_reason
    assert len({c.text for c in out.choices}) > 1  # different seeds: different samples
    assert out.usage.prompt_tokens == singles[0].usage.prompt_tokens  # the prompt counts once
    assert out.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_n_chat_choices_equal_singles(client):
    kwargs = dict(model="gamma", messages=[{"role": "user", "content": "pick"}], max_tokens=6, temperature=0.9)
    out = client.chat.completions.create(**kwargs, n=2, seed=7)
    singles = [client.chat.completions.create(**kwargs, seed=7 + j) for j in range(2)]
    assert [c.message.content for c in out.choices] == [s.choices[0].message.content for s in singles]
    assert [c.index for c in out.choices] == [0, 1]
    assert out.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)


def test_n_streams_interleave_tagged_by_index_and_equal_the_whole(client):
    kwargs = dict(model="alpha", prompt="interleave", max_tokens=10, temperature=1.0, seed=5, n=3, logprobs=1)
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    texts: dict[int, str] = defaultdict(str)
    tokens: dict[int, list] = defaultdict(list)
    finish: dict[int, str] = {}
    order = []
    for chunk in chunks:
        for choice in chunk.choices:
            order.append(choice.index)
            texts[choice.index] += choice.text
            tokens[choice.index] += choice.logprobs.tokens
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert order != sorted(order)  # the choices' chunks are interleaved, not one choice after another
    for c in whole.choices:
        assert texts[c.index] == c.text and tokens[c.index] == c.logprobs.tokens
        assert finish[c.index] == c.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_n_above_the_limit_is_400_with_a_clear_message(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=BASE, prompt="x", max_tokens=2, n=9)
    message = info.value.body["message"]
    assert "n=9" in message and "8" in message and "--max-n" in message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=BASE, messages=[{"role": "user", "content": "x"}], n=9)


def test_echo_returns_the_prompt_before_the_completion(client):
    plain = client.completions.create(model="alpha", prompt="echo me", max_tokens=5, temperature=0)
    echoed = client.completions.create(model="alpha", prompt="echo me", max_tokens=5, temperature=0, echo=True)
    assert echoed.choices[0].text == "echo me" + plain.choices[0].text
    assert echoed.choices[0].logprobs is None
    assert echoed.usage == plain.usage
    ids = TOKENIZER("by ids")["input_ids"]
    by_ids = client.completions.create(model="alpha", prompt=ids, max_tokens=3, temperature=0, echo=True)
    assert by_ids.choices[0].text.startswith("by ids")
    chunks = list(
        client.completions.create(model="alpha", prompt="echo me", max_tokens=5, temperature=0, echo=True, stream=True)
    )
    assert chunks[0].choices[0].text.startswith("echo me")
    assert "".join(c.choices[0].text for c in chunks) == echoed.choices[0].text


@pytest.mark.parametrize("as_ids", [False, True])
def test_several_prompts_give_choices_in_order_each_equal_to_the_prompt_alone(client, as_ids):
    prompts = ["first prompt", "second", "the third one"]
    sent = [TOKENIZER(p)["input_ids"] for p in prompts] if as_ids else prompts
    kwargs = dict(model="gamma", max_tokens=6, temperature=0.8, seed=11)
    out = client.completions.create(**kwargs, prompt=sent, n=2, echo=True)
    assert [c.index for c in out.choices] == list(range(6))
    for p, prompt in enumerate(sent):
        for j in range(2):
            single = alone(client, **{**kwargs, "seed": 11 + j}, prompt=prompt, echo=True)
            assert out.choices[p * 2 + j].text == single.choices[0].text, (p, j)
            assert out.choices[p * 2 + j].text.startswith(prompts[p])
    lengths = [len(TOKENIZER(p)["input_ids"]) for p in prompts]
    assert out.usage.prompt_tokens == sum(lengths)  # each prompt once, not once per choice


@contextlib.contextmanager
def slow_steps(live: LiveServer, seconds: float) -> Iterator[None]:
    """Each engine step of `live` takes at least `seconds` (the tiny model would finish before a client reads)."""
    runner = live.app.state.engine.core.runner
    real = runner.execute

    def slow(plan):
        time.sleep(seconds)
        return real(plan)

    runner.execute = slow
    try:
        yield
    finally:
        runner.execute = real


def test_all_choices_are_freed_when_the_client_disconnects(server):
    body = {"model": "alpha", "prompt": "go", "max_tokens": 200, "temperature": 0, "ignore_eos": True}
    with slow_steps(server, 0.01):  # 200 steps: 2 s unless cancelled
        with httpx.stream(
            "POST", server.url + "/v1/completions", json=body | {"n": 3, "stream": True}, timeout=60
        ) as r:
            assert r.status_code == 200
            lines = r.iter_lines()  # kept: dropping the iterator would close the response
            assert next(line for line in lines if line.startswith("data:")).startswith("data: {")
            assert httpx.get(server.url + "/health").json()["running"] == 3
        start = time.monotonic()
        assert wait_for_idle(server)["free_slots"] == 8
        assert time.monotonic() - start < 1.0

        async def leave_early() -> None:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
                task = asyncio.create_task(c.post("/v1/completions", json=body | {"n": 4, "prompt": ["a", "b"]}))
                await asyncio.sleep(0.3)
                assert (await c.get("/health")).json()["running"] == 8
                task.cancel()  # closes the connection
                with pytest.raises(asyncio.CancelledError):
                    await task

        asyncio.run(leave_early())
        start = time.monotonic()
        assert wait_for_idle(server)["free_slots"] == 8
        assert time.monotonic() - start < 1.0


def test_every_choice_counts_against_the_queue_and_a_refused_request_queues_nothing(adapter_root):
    live = LiveServer(serve_config(adapter_root, max_num_seqs=1, max_waiting=2)).start()
    try:
        long = {"model": BASE, "prompt": "hi", "max_tokens": 60, "temperature": 0, "ignore_eos": True}
        # More sequences than the queue ever holds can never be queued: a 400, not a 429 to retry forever.
        never = httpx.post(live.url + "/v1/completions", json=long | {"n": 3}, timeout=60)
        assert_error(never, 400, "invalid_request")
        with slow_steps(live, 0.01), ThreadPoolExecutor(2) as pool:
            busy = [pool.submit(httpx.post, live.url + "/v1/completions", json=long, timeout=60) for _ in range(2)]
            wait_for(live, lambda h: h["running"] == 1 and h["waiting"] == 1)  # one slot, one queue place taken
            refused = httpx.post(live.url + "/v1/completions", json=long | {"n": 2}, timeout=60)
            assert_error(refused, 429, "queue_full")  # the first choice fit, the second did not
            start = time.monotonic()
            wait_for(live, lambda h: h["waiting"] <= 1)  # the choice queued before the refusal was cancelled
            assert time.monotonic() - start < 0.5
            assert all(f.result().status_code == 200 for f in busy)
        ok = httpx.post(live.url + "/v1/completions", json=long | {"n": 2, "max_tokens": 3}, timeout=60)
        assert ok.status_code == 200 and len(ok.json()["choices"]) == 2
    finally:
        live.stop()


def wait_for(live: LiveServer, condition, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while not condition(health := httpx.get(live.url + "/health").json()):
        assert time.monotonic() < deadline, health
        time.sleep(0.005)
    return health
