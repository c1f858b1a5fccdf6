"""Wiring `prefixtune serve --engine vllm`: the vLLM engine and its registry from a `ServeConfig`.

One job: what `serve.server.build_engine` does for the built-in engine. The base model stays loaded in this
(front-end) process as transformers loads it: its fingerprint validates adapters, and `prefix`/`prompt`
adapters are compiled on it once per content into KV packs (see `compiler`); vLLM loads its own copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from prefixtune.models import cache_dir, model_directory
from prefixtune.serve.config import ServeConfig
from prefixtune.serve.metrics import ServeMetrics
from prefixtune.serve.registry import AdapterRegistry
from prefixtune.vllm.compiler import VllmAdapterCompiler
from prefixtune.vllm.engine import VllmEngine
from prefixtune.vllm.engine_config import VllmEngineConfig


def build_vllm_engine(
    model: nn.Module, tokenizer: Any, config: ServeConfig, metrics: ServeMetrics, root: Path | None, name: str
) -> tuple[VllmEngine, AdapterRegistry]:
    """A `VllmEngine` (started by the app's lifespan) and its registry."""
    kv_root = Path(config.vllm_kv_dir) if config.vllm_kv_dir else cache_dir() / "vllm-kv"
    registry = AdapterRegistry(
        root,
        VllmAdapterCompiler(model, kv_root, allow_unverified=config.allow_unverified_adapters),
        cache_bytes=int(config.adapter_cache_mb * 2**20),
        metrics=metrics,
        reserved_names=(name,),
    )
    engine_config = VllmEngineConfig(
        model=str(model_directory(config.model)),
        served_model_name=name,
        kv_root=str(kv_root),
        device_budget_mb=config.adapter_cache_mb,
        dtype=config.vllm_dtype,
        max_model_len=config.max_model_len,
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
        max_waiting=config.max_waiting,
        tensor_parallel_size=config.vllm_tensor_parallel_size,
        data_parallel_size=config.vllm_data_parallel_size,
        gpu_memory_utilization=config.vllm_gpu_memory_utilization,
        enable_prefix_caching=config.vllm_enable_prefix_caching,
        block_size=config.vllm_block_size,
        kv_cache_gb=config.vllm_kv_cache_gb,
        enforce_eager=config.vllm_enforce_eager,
    )
    return VllmEngine(tokenizer, registry, engine_config, metrics), registry
