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
from prefixtune.serve.registry import AdapterRegistry, run_in_thread
from prefixtune.vllm.compiler import VllmAdapterCompiler
from prefixtune.vllm.engine import VllmEngine
from prefixtune.vllm.engine_config import VllmEngineConfig


def build_vllm_engine(
    model: nn.Module, tokenizer: Any, config: ServeConfig, metrics: ServeMetrics, root: Path | None, name: str
) -> tuple[VllmEngine, AdapterRegistry]:
    """A `VllmEngine` (started by the app's lifespan) and its registry."""
    kv_root = Path(config.vllm.kv_dir) if config.vllm.kv_dir else cache_dir() / "vllm-kv"
    registry = AdapterRegistry(
        root,
        VllmAdapterCompiler(model, kv_root, allow_unverified=config.registry.allow_unverified_adapters),
        config.registry,
        metrics=metrics,
        run_compile=run_in_thread,  # packs are compiled on this process's copy of the model, beside vLLM's
        reserved_names=(name,),
    )
    engine_config = VllmEngineConfig(
        model=str(model_directory(config.model)),
        served_model_name=name,
        kv_root=str(kv_root),
        registry=config.registry,
        limits=config.limits,
        vllm=config.vllm,
    )
    return VllmEngine(tokenizer, registry, engine_config, metrics), registry
