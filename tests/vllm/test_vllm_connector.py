"""The connector as users who run vLLM themselves load it: `vllm.LLM` with `kv_transfer_config`, KV packs in a
directory, requests built with `prefixtune.vllm.addressing`. The KV cache is small enough to force preemption,
and prefix caching is on: outputs still equal prefixtune's `generate`, row for row."""

from __future__ import annotations

import pytest
import torch

from prefixtune.io.kv_pack import write_kv_pack
from prefixtune.vllm.addressing import adapter_params, adapter_prompt
from tests.vllm.conftest import ADAPTERS, BLOCK_SIZE, reference_model

pytest.importorskip("vllm", reason="the vLLM engine tests need vLLM: run `make setup-vllm` (CI runs them)")

PROMPTS = [[5, 9, 33, 60, 70, 12], [44, 45, 46], [7, 8, 9, 10, 11, 12, 13, 14, 15], [100, 101], [20, 21, 22, 23]]
MAX_TOKENS = 64


@pytest.fixture(scope="module")
def setup(model_dir, adapter_root, tmp_path_factory):
    from vllm import LLM

    kv_root = tmp_path_factory.mktemp("packs")
    pm = reference_model(adapter_root)
    with torch.no_grad():
        for name in ADAPTERS:
            write_kv_pack(pm.compile(name), kv_root / f"{name}.kv.safetensors")
    llm = LLM(
        model=str(model_dir),
        dtype="float32",
        enforce_eager=True,
        max_model_len=256,
        block_size=BLOCK_SIZE,
        kv_cache_memory_bytes=1 << 20,  # 32 blocks of 32 tokens: 20 requests of ~110 tokens cannot all fit
        gpu_memory_utilization=0.3,
        enable_prefix_caching=True,
        max_num_seqs=20,
        disable_log_stats=False,  # per-request preemption counts
        kv_transfer_config={
            "kv_connector": "PrefixKVConnector",
            "kv_connector_module_path": "prefixtune.vllm.connector",
            "kv_role": "kv_both",
            "kv_connector_extra_config": {"kv_root": str(kv_root)},
        },
    )
    yield llm, pm
    llm.llm_engine.engine_core.shutdown()


def request(prompt: list[int], adapter: str | None, m: int, max_tokens: int = MAX_TOKENS):
    from vllm import SamplingParams

    if adapter is None:
        return {"prompt_token_ids": prompt}, SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=0,
        ignore_eos=True,
        extra_args={"kv_transfer_params": adapter_params(adapter)},
    )
    return adapter_prompt(prompt, adapter, m), params


def reference_ignore_eos(pm, adapter, prompt, max_tokens):
    with torch.no_grad():
        out = pm.generate(torch.tensor([prompt]), adapter_names=[adapter], max_new_tokens=max_tokens, do_sample=False,
                          eos_token_id=None, min_new_tokens=max_tokens)  # fmt: skip
    return out[0, len(prompt) :].tolist()


def test_mixed_batch_under_preemption_equals_rows_alone(setup) -> None:
    llm, pm = setup
    names = [*ADAPTERS, None]
    jobs = [(names[i % 4], PROMPTS[i % len(PROMPTS)]) for i in range(20)]
    built = [request(p, a, ADAPTERS[a].num_virtual_tokens if a else 0) for a, p in jobs]
    outputs = llm.generate([b[0] for b in built], [b[1] for b in built], use_tqdm=False)
    assert sum(o.metrics.num_preemptions for o in outputs) > 0, "the KV cache was meant to force preemption"
    for (adapter, prompt), out in zip(jobs, outputs, strict=True):
        assert list(out.outputs[0].token_ids) == reference_ignore_eos(pm, adapter, prompt, MAX_TOKENS), adapter


def test_repeat_pass_reuses_the_adapters_cached_blocks(setup) -> None:
    """The second identical pass hits vLLM's prefix cache (salted per adapter) and still equals the reference."""
    llm, pm = setup
    built = [request(PROMPTS[2], "forty", 40, 8) for _ in range(2)]
    first = llm.generate([built[0][0]], [built[0][1]], use_tqdm=False)[0]
    second = llm.generate([built[1][0]], [built[1][1]], use_tqdm=False)[0]
    assert second.num_cached_tokens >= BLOCK_SIZE  # the full placeholder block came from the cache
    assert list(first.outputs[0].token_ids) == list(second.outputs[0].token_ids)
    assert list(second.outputs[0].token_ids) == reference_ignore_eos(pm, "forty", PROMPTS[2], 8)


def test_a_missing_pack_fails_the_request_instead_of_serving_placeholders(setup) -> None:
    llm, _ = setup
    prompt, params = request(PROMPTS[0], "no-such-adapter", 5, 4)
    out = llm.generate([prompt], [params], use_tqdm=False)[0]
    assert out.outputs[0].finish_reason == "error" or not out.outputs[0].token_ids
