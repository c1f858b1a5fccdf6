"""`VllmSettings` (the `--vllm-*` flags) and `VllmEngineConfig` (what the vLLM engine is started with).

One job: vLLM's own options, defined once, and from them plus the shared `EngineLimits` the
`AsyncEngineArgs` keywords, with the connector configured. No vllm or torch import, so `ServeConfig` holds
`VllmSettings` and the CLI validates flags without vLLM installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefixtune.config_sections import flag_help
from prefixtune.serve.engine.limits import EngineLimits
from prefixtune.serve.registry_config import RegistryConfig


@dataclass(frozen=True, slots=True)
class VllmSettings:
    """vLLM's options (flags `--vllm-NAME`; `ServeConfig.vllm`). Used only with `--engine vllm`."""

    tensor_parallel_size: int = field(default=1, metadata=flag_help("vLLM: tensor-parallel size."))
    data_parallel_size: int = field(default=1, metadata=flag_help("vLLM: data-parallel size."))
    dtype: str = field(default="auto", metadata=flag_help("vLLM: weights dtype (auto, float32, bfloat16, float16)."))
    gpu_memory_utilization: float = field(default=0.9, metadata=flag_help("vLLM: share of GPU memory to use."))
    enable_prefix_caching: bool = field(
        default=True,
        metadata=flag_help("vLLM: prefix caching (adapters' placeholder blocks are shared per adapter)."),
    )
    block_size: int | None = field(default=None, metadata=flag_help("vLLM: KV-cache block size (default: vLLM's)."))
    kv_cache_gb: float | None = field(
        default=None, metadata=flag_help("vLLM: KV-cache size in GiB (default: vLLM's; on a CPU, 4).")
    )
    enforce_eager: bool = field(
        default=False, metadata=flag_help("vLLM: no torch.compile/CUDA graphs (faster start, slower steps).")
    )
    kv_dir: str | None = field(
        default=None,
        metadata=flag_help("vLLM: directory of compiled adapter KV packs (default: the prefixtune cache's vllm-kv/)."),
    )

    def problems(self) -> list[str]:
        """Every invalid field, named by its flag's field name (`vllm_...`)."""
        out = []
        for name in ("tensor_parallel_size", "data_parallel_size"):
            if getattr(self, name) < 1:
                out.append(f"vllm_{name}={getattr(self, name)} must be >= 1")
        if not 0 < self.gpu_memory_utilization <= 1:
            out.append(f"vllm_gpu_memory_utilization={self.gpu_memory_utilization} must be in (0, 1]")
        if self.kv_cache_gb is not None and self.kv_cache_gb <= 0:
            out.append(f"vllm_kv_cache_gb={self.kv_cache_gb} must be > 0")
        if self.block_size is not None and self.block_size < 1:
            out.append(f"vllm_block_size={self.block_size} must be >= 1")
        return out


@dataclass(frozen=True, slots=True)
class VllmEngineConfig:
    """What vLLM is started with.

    Attributes:
        model: the Hugging Face model directory vLLM loads.
        served_model_name: the base model's name in the API.
        kv_root: where KV packs are written and the connector reads them.
        registry: its `adapter_cache_mb` is each worker's device memory for resident adapters.
        limits: batching and context limits, the same fields as the built-in engine's.
        vllm: vLLM's own options.
        seed: vLLM's seed.
    """

    model: str
    served_model_name: str
    kv_root: str
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    limits: EngineLimits = field(default_factory=EngineLimits)
    vllm: VllmSettings = field(default_factory=VllmSettings)
    seed: int = 0

    def kv_transfer_config(self) -> dict[str, Any]:
        """The connector, loaded by module path in every vLLM process."""
        return {
            "kv_connector": "PrefixKVConnector",
            "kv_connector_module_path": "prefixtune.vllm.connector",
            "kv_role": "kv_both",
            "kv_load_failure_policy": "fail",  # a pack that cannot be written fails its request, never recomputes
            "kv_connector_extra_config": {
                "kv_root": str(Path(self.kv_root).resolve()),
                "device_budget_mb": self.registry.adapter_cache_mb,
            },
        }

    def engine_args(self) -> dict[str, Any]:
        """Keywords of `vllm.engine.arg_utils.AsyncEngineArgs`."""
        v, scheduler = self.vllm, self.limits.scheduler
        args: dict[str, Any] = {
            "model": self.model,
            "served_model_name": [self.served_model_name],
            "dtype": v.dtype,
            "max_num_seqs": scheduler.max_num_seqs,
            "max_num_batched_tokens": scheduler.max_num_batched_tokens,
            "tensor_parallel_size": v.tensor_parallel_size,
            "data_parallel_size": v.data_parallel_size,
            "gpu_memory_utilization": v.gpu_memory_utilization,
            "enable_prefix_caching": v.enable_prefix_caching,
            "enforce_eager": v.enforce_eager,
            "seed": self.seed,
            "kv_transfer_config": self.kv_transfer_config(),
        }
        optional = {
            "max_model_len": self.limits.max_model_len,
            "block_size": v.block_size,
            "kv_cache_memory_bytes": None if v.kv_cache_gb is None else int(v.kv_cache_gb * 2**30),
        }
        args.update({k: v for k, v in optional.items() if v is not None})
        return args
