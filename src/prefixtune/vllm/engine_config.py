"""`VllmEngineConfig`: the vLLM engine options `prefixtune serve --engine vllm` passes through.

One job: from our `ServeConfig` to `AsyncEngineArgs` keywords, with the connector configured. No vllm
import, so the CLI validates flags without vLLM installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class VllmEngineConfig:
    """What vLLM is started with (see `ServeConfig`'s `vllm_*` fields for each one's meaning).

    Attributes:
        model: the Hugging Face model directory vLLM loads.
        served_model_name: the base model's name in the API.
        kv_root: where KV packs are written and the connector reads them.
        device_budget_mb: device memory for resident adapters per worker.
    """

    model: str
    served_model_name: str
    kv_root: str
    device_budget_mb: float = 512.0
    dtype: str = "auto"
    max_model_len: int | None = None
    max_num_seqs: int = 16
    max_num_batched_tokens: int | None = None
    max_waiting: int = 256
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    block_size: int | None = None
    kv_cache_gb: float | None = None
    enforce_eager: bool = False
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
                "device_budget_mb": self.device_budget_mb,
            },
        }

    def engine_args(self) -> dict[str, Any]:
        """Keywords of `vllm.engine.arg_utils.AsyncEngineArgs`."""
        args: dict[str, Any] = {
            "model": self.model,
            "served_model_name": [self.served_model_name],
            "dtype": self.dtype,
            "max_num_seqs": self.max_num_seqs,
            "tensor_parallel_size": self.tensor_parallel_size,
            "data_parallel_size": self.data_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "enable_prefix_caching": self.enable_prefix_caching,
            "enforce_eager": self.enforce_eager,
            "seed": self.seed,
            "kv_transfer_config": self.kv_transfer_config(),
        }
        optional = {
            "max_model_len": self.max_model_len,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "block_size": self.block_size,
            "kv_cache_memory_bytes": None if self.kv_cache_gb is None else int(self.kv_cache_gb * 2**30),
        }
        args.update({k: v for k, v in optional.items() if v is not None})
        return args
