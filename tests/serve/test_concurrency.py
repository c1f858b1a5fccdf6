"""Many tenants at once: mixed-adapter batches equal each request run alone; load/unload under traffic."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

from tests.serve.conftest import BASE, LiveServer, serve_config

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def mixed_requests(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    models = [BASE, "alpha", "beta", "gamma"]
    words = ["the", "cat", "sat", "on", "a", "mat", "prefix", "tuning", "serves", "many"]
    return [
        {
            "model": models[i % 4],
            "prompt": " ".join(rng.choice(words) for _ in range(rng.randint(1, 8))),
            "max_tokens": rng.randint(3, 10),
            "temperature": 0,
        }
        for i in range(n)
    ]


async def complete(client: httpx.AsyncClient, body: dict) -> dict:
    response = await client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_32_concurrent_mixed_requests_equal_each_alone(server: LiveServer):
    requests = mixed_requests(32)
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        before = server.metric((await client.get("/metrics")).text, "prefixtune_batch_size_count")
        together = await asyncio.gather(*(complete(client, r) for r in requests))
        metrics = (await client.get("/metrics")).text
        alone = [await complete(client, r) for r in requests]
    for body, a, b in zip(requests, together, alone, strict=True):
        assert a["choices"][0]["text"] == b["choices"][0]["text"], body
        assert a["usage"] == b["usage"]
    assert server.metric(metrics, "prefixtune_batch_size_max") > 1
    steps = server.metric(metrics, "prefixtune_batch_size_count") - before
    assert steps < sum(r["max_tokens"] for r in requests)  # rows shared steps
    assert server.metric(metrics, "prefixtune_step_distinct_adapters_count") > 0


async def test_load_and_unload_while_requests_run(private_root):
    live = LiveServer(serve_config(private_root)).start()
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=120) as client:
            long = {"model": "alpha", "prompt": "keep going", "max_tokens": 40, "temperature": 0, "ignore_eos": True}
            running = [asyncio.create_task(complete(client, long)) for _ in range(4)]
            await asyncio.sleep(0.05)
            loaded = await client.post("/v1/adapters", json={"name": "delta", "path": "spare/delta"})
            assert loaded.status_code == 201, loaded.text
            assert loaded.json()["parent"] == BASE
            unloaded = await client.delete("/v1/adapters/alpha")
            assert unloaded.status_code == 200 and unloaded.json()["deleted"] is True
            results = await asyncio.gather(*running)  # in-flight requests on alpha finish
            assert all(r["usage"]["completion_tokens"] == 40 for r in results)
            gone = await client.post("/v1/completions", json={**long, "max_tokens": 2})
            assert gone.status_code == 404
            new = await complete(client, {"model": "delta", "prompt": "hi", "max_tokens": 3, "temperature": 0})
            assert new["model"] == "delta"
            before = (await client.get("/v1/models")).json()
            failures = {
                "spare/wrongbase": "incompatible_base_model",
                "spare/broken": "invalid_adapter",
                "spare/missing": "invalid_adapter",
                "../outside": "invalid_adapter_name",
                "/etc": "invalid_adapter_name",
            }
            for path, code in failures.items():
                bad = await client.post("/v1/adapters", json={"name": "epsilon", "path": path})
                assert bad.status_code == 400, (path, bad.text)
                assert bad.json()["error"]["code"] == code, (path, bad.text)
                assert str(private_root) not in bad.text  # no server paths
            assert (await client.get("/v1/models")).json()["data"] == before["data"]
            again = await complete(client, {"model": "delta", "prompt": "hi", "max_tokens": 3, "temperature": 0})
            assert again["choices"] == new["choices"]
    finally:
        live.stop()


async def test_evicted_adapters_are_recompiled_on_demand_under_traffic(server: LiveServer, adapter_root):
    tiny_cache = LiveServer(serve_config(adapter_root, adapter_cache_mb=0.000001)).start()  # one prefix at most
    requests = mixed_requests(12, seed=3)
    try:
        async with httpx.AsyncClient(base_url=tiny_cache.url, timeout=120) as client:
            evicting = await asyncio.gather(*(complete(client, r) for r in requests))
            metrics = (await client.get("/metrics")).text
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            cached = await asyncio.gather(*(complete(client, r) for r in requests))
    finally:
        tiny_cache.stop()
    assert [r["choices"] for r in evicting] == [r["choices"] for r in cached]
    assert server.metric(metrics, "prefixtune_adapter_cache_evictions_total") > 0
    assert server.metric(metrics, "prefixtune_adapter_cache_misses_total") > 0


async def test_seeded_sampling_together_equals_alone(server: LiveServer):
    requests = [
        r | {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "seed": 100 + i}
        for i, r in enumerate(mixed_requests(12, seed=5))
    ]
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        together = await asyncio.gather(*(complete(client, r) for r in requests))
        alone = [await complete(client, r) for r in requests]
    assert [r["choices"][0]["text"] for r in together] == [r["choices"][0]["text"] for r in alone]
