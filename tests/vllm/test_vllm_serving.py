"""`prefixtune serve --engine vllm` against prefixtune's own `generate` and own engine: token for token, for
every method, m = 1 / 5 / 40 (block size 32: m < a block, not a multiple of it, spanning two), mixed adapters
in concurrent batches, prefix caching, reloads, and the requests it must refuse."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import openai
import pytest

import prefixtune as pt
from prefixtune.serve.config import ServeConfig
from tests.train.conftest import make_tokenizer
from tests.vllm.conftest import (
    ADAPTERS,
    BuiltinServer,
    VllmServer,
    make_vllm_model,
    reference_greedy,
    reference_model,
    save_adapter,
)

pytest.importorskip("vllm", reason="the vLLM engine tests need vLLM: run `make setup-vllm` (CI runs them)")

PROMPTS = [[5, 9, 33, 60, 70, 12], [44, 45, 46], [7, 8, 9, 10, 11, 12, 13, 14, 15], [100, 101]]
MODELS = [*ADAPTERS, None]


@pytest.fixture(scope="module")
def server(model_dir, adapter_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("vllm-serving")
    live = VllmServer(model_dir, adapter_root, work / "kv", work / "server.log").start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def reference(adapter_root) -> pt.PrefixModel:
    return reference_model(adapter_root)


def expected_text(pm: pt.PrefixModel, adapter: str | None, prompt: list[int], max_tokens: int) -> tuple[str, int]:
    tokens = reference_greedy(pm, adapter, prompt, max_tokens)
    return make_tokenizer().decode(tokens, skip_special_tokens=True), len(tokens)


@pytest.mark.parametrize("adapter", MODELS)
def test_greedy_equals_prefixtune_generate(server, reference, adapter) -> None:
    for prompt in PROMPTS:
        response = server.complete(adapter or "tiny", prompt, max_tokens=12)
        assert response.status_code == 200, response.text
        body = response.json()
        text, count = expected_text(reference, adapter, prompt, 12)
        assert body["choices"][0]["text"] == text
        assert body["usage"] == {
            "prompt_tokens": len(prompt),
            "completion_tokens": count,
            "total_tokens": len(prompt) + count,
        }


def test_equals_the_builtin_engine(server, model_dir, adapter_root) -> None:
    """The same requests through `--engine prefixtune` (in this process) give the same texts."""
    config = ServeConfig(model=str(model_dir), served_model_name="tiny", adapters=str(adapter_root))
    builtin = BuiltinServer(make_vllm_model(), make_tokenizer(), config).start()
    try:
        for adapter in MODELS:
            for prompt in PROMPTS[:2]:
                body = {"model": adapter or "tiny", "prompt": prompt, "max_tokens": 10, "temperature": 0}
                ours = httpx.post(builtin.url + "/v1/completions", json=body, timeout=60).json()
                theirs = server.complete(adapter or "tiny", prompt, max_tokens=10).json()
                assert theirs["choices"][0]["text"] == ours["choices"][0]["text"], (adapter, prompt)
                assert theirs["usage"] == ours["usage"]
    finally:
        builtin.stop()


def test_concurrent_mixed_requests_equal_each_alone(server, reference) -> None:
    """16+ concurrent streams over the official client, 3 adapters and bare rows: each equals its reference, and
    the streams interleave (vLLM batched them instead of running one after another)."""
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    jobs = [(MODELS[i % 4], PROMPTS[i % len(PROMPTS)]) for i in range(20)]

    async def one(adapter, prompt):
        stamps, text = [], ""
        stream = await client.completions.create(
            model=adapter or "tiny", prompt=prompt, max_tokens=24, temperature=0, stream=True
        )
        async for chunk in stream:
            stamps.append(time.monotonic())
            text += chunk.choices[0].text if chunk.choices else ""
        return text, stamps[0], stamps[-1]

    async def run_all():
        return await asyncio.gather(*(one(a, p) for a, p in jobs))

    results = asyncio.run(run_all())
    for (adapter, prompt), (text, _, _) in zip(jobs, results, strict=True):
        assert text == expected_text(reference, adapter, prompt, 24)[0], (adapter, prompt)
    first_ends = min(end for _, _, end in results)
    assert sum(start < first_ends for _, start, _ in results) >= 8  # most streams were running together
    # vLLM's own histogram of tokens per engine step (on our /metrics): some steps decoded 8+ rows at once
    metrics = httpx.get(server.url + "/metrics").text
    assert (
        bucket(metrics, "vllm:iteration_tokens_total", "+Inf") - bucket(metrics, "vllm:iteration_tokens_total", "8.0")
        > 0
    )


def bucket(text: str, name: str, le: str) -> float:
    """The cumulative count of a Prometheus histogram bucket (summed over label sets)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "_bucket{") and f'le="{le}"' in line
    )


def test_repeated_requests_with_prefix_caching_equal(server, reference) -> None:
    for _ in range(3):
        for adapter in ("five", "forty"):
            text, _ = expected_text(reference, adapter, PROMPTS[2], 8)
            assert server.complete(adapter, PROMPTS[2], max_tokens=8).json()["choices"][0]["text"] == text


def test_reloaded_adapter_serves_its_new_contents(server, adapter_root) -> None:
    """Unload, change the files, load under the same name: the new adapter's outputs (no stale cache blocks)."""
    spare = adapter_root / "spare-forty"
    save_adapter(make_vllm_model(), ADAPTERS["forty"], spare, seed=99)
    before = server.complete("forty", PROMPTS[0], max_tokens=10).json()["choices"][0]["text"]
    assert httpx.delete(server.url + "/v1/adapters/forty", timeout=30).status_code in (200, 204)
    try:
        response = httpx.post(server.url + "/v1/adapters", json={"name": "forty", "path": "spare-forty"}, timeout=60)
        assert response.status_code in (200, 201), response.text
        after = server.complete("forty", PROMPTS[0], max_tokens=10).json()["choices"][0]["text"]
        pm = pt.load_adapter(make_vllm_model(), spare, adapter_name="forty")
        assert after == expected_text(pm, "forty", PROMPTS[0], 10)[0]
        assert after != before
    finally:
        httpx.delete(server.url + "/v1/adapters/forty", timeout=30)
        httpx.post(server.url + "/v1/adapters", json={"name": "forty", "path": "forty"}, timeout=60)


def test_prompt_logprobs_for_an_adapter_is_refused_not_wrong(server) -> None:
    response = server.complete("five", PROMPTS[0], max_tokens=2, echo=True, logprobs=1)
    assert response.status_code == 400
    assert "prompt logprobs" in response.json()["error"]["message"]


def test_classify_is_a_clear_400_on_the_vllm_engine(server) -> None:
    response = httpx.post(server.url + "/v1/classify", json={"model": "five", "input": "hi"}, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["code"] == "not_an_encoder"


def test_sampled_logprobs_match_the_reference(server, reference) -> None:
    """Logprobs of greedy tokens: vLLM's raw logprobs equal log_softmax of prefixtune's forward."""
    import torch

    prompt = PROMPTS[0]
    body = server.complete("five", prompt, max_tokens=4, logprobs=3).json()
    got = body["choices"][0]["logprobs"]["token_logprobs"]
    tokens = reference_greedy(reference, "five", prompt, 4)
    ids = list(prompt)
    for i, token in enumerate(tokens):
        with torch.no_grad():
            logits = reference(input_ids=torch.tensor([ids]), adapter_names=["five"]).logits[0, -1]
        assert got[i] == pytest.approx(float(logits.float().log_softmax(-1)[token]), abs=1e-3)
        ids.append(token)


@pytest.mark.parametrize("case", ["wrongbase", "truncated", "nan", "pickle"])
def test_bad_adapters_are_refused(server, adapter_root, case) -> None:
    bad = adapter_root / f"bad-{case}"
    make_bad_adapter(bad, case)
    response = httpx.post(server.url + "/v1/adapters", json={"name": f"bad-{case}", "path": bad.name}, timeout=60)
    assert response.status_code == 400, response.text
    assert f"bad-{case}" not in [m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]]


def make_bad_adapter(path: Path, case: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    if case == "wrongbase":
        save_adapter(make_vllm_model(seed=1), ADAPTERS["five"], path, seed=1)
        return
    save_adapter(make_vllm_model(), ADAPTERS["five"], path, seed=1)
    weights = path / "adapter.safetensors"
    if case == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif case == "nan":
        tensors = load_file(weights)
        first = sorted(tensors)[0]
        tensors[first][0, 0] = float("nan")
        save_file(tensors, weights)
    elif case == "pickle":
        weights.unlink()
        torch.save({"x": torch.zeros(1)}, path / "adapter_model.bin")


def test_unload_during_traffic(server, adapter_root, reference) -> None:
    """Requests running with an adapter finish while it is unloaded; new ones get 404; the others are unharmed."""
    httpx.post(server.url + "/v1/adapters", json={"name": "churn", "path": "five"}, timeout=60)

    async def traffic():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            body = {"prompt": PROMPTS[1], "max_tokens": 16, "temperature": 0}
            running = [asyncio.ensure_future(client.post("/v1/completions", json={**body, "model": m}))
                       for m in ("churn", "one", "churn", "tiny")]  # fmt: skip
            await asyncio.sleep(0.05)
            unload = await client.delete("/v1/adapters/churn")
            return await asyncio.gather(*running), unload

    results, unload = asyncio.run(traffic())
    assert unload.status_code in (200, 204)
    for model, response in zip(("churn", "one", "churn", "tiny"), results, strict=True):
        if response.status_code == 200 and model != "churn":
            text = expected_text(reference, model if model != "tiny" else None, PROMPTS[1], 16)[0]
            assert response.json()["choices"][0]["text"] == text
        elif model == "churn":
            assert response.status_code in (200, 404)
        else:
            raise AssertionError(response.text)
    assert server.complete("churn", PROMPTS[1]).status_code == 404
