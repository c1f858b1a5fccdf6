"""Soak (issue 10, slow tier): streaming clients mixing adapters and the base model for a bounded time, while
an admin loads and unloads adapters and a cache budget of about one prefix forces evictions and recompiles.
Asserts no 5xx at all, and that every completed stream equals the same request sent alone afterwards."""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
import pytest

from tests.serve.conftest import BASE, LiveServer, serve_config

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

SOAK_S = 20.0
CLIENTS = 8


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def stream(client: httpx.AsyncClient, body: dict) -> tuple[int, str]:
    text = []
    async with client.stream("POST", "/v1/completions", json=body | {"stream": True}) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, ""
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                text.extend(c["text"] for c in chunk["choices"])
    return 200, "".join(text)


async def test_soak_with_churn_has_no_5xx_and_equal_outputs(private_root):
    # adapter_cache_mb: about one compiled prefix of the tiny model, so nearly every switch evicts and recompiles
    live = LiveServer(serve_config(private_root, adapter_cache_mb=0.002, max_num_seqs=4)).start()
    deadline = time.monotonic() + SOAK_S
    done: list[tuple[dict, str]] = []
    statuses: list[int] = []
    try:
        async with httpx.AsyncClient(base_url=live.url, timeout=120) as client:

            async def tenant(seed: int) -> None:
                rng = random.Random(seed)
                while time.monotonic() < deadline:
                    body = {
                        "model": rng.choice([BASE, "alpha", "beta", "gamma", "churn"]),
                        "prompt": "".join(rng.choice("abcdefgh ") for _ in range(rng.randint(1, 12))),
                        "max_tokens": rng.randint(1, 12),
                        "temperature": 0,
                    }
                    status, text = await stream(client, body)
                    statuses.append(status)
                    if status == 200 and body["model"] != "churn":
                        done.append((body, text))

            async def admin() -> None:
                while time.monotonic() < deadline:
                    statuses.append(
                        (await client.post("/v1/adapters", json={"name": "churn", "path": "spare/delta"})).status_code
                    )
                    await asyncio.sleep(0.2)
                    statuses.append((await client.delete("/v1/adapters/churn")).status_code)
                    await asyncio.sleep(0.1)

            await asyncio.gather(admin(), *(tenant(i) for i in range(CLIENTS)))
            assert not [s for s in statuses if s >= 500], sorted(set(statuses))
            assert set(statuses) <= {200, 201, 204, 404}, sorted(set(statuses))
            assert len(done) > 4 * CLIENTS
            metrics = (await client.get("/metrics")).text
            assert live.metric(metrics, "prefixtune_adapter_cache_evictions_total") > 0
            for body, text in done[:: max(1, len(done) // 40)]:  # a spread sample, each sent alone
                status, alone = await stream(client, body)
                assert (status, alone) == (200, text), body
    finally:
        live.stop()
