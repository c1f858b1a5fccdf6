"""`ServeConfig`: everything `prefixtune serve` is configured with (one field = one CLI flag).

Depends only on `prefixtune.errors`. `problems()` lists every invalid field at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from prefixtune.errors import ConfigError

ENGINES = ("prefixtune", "vllm")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Configuration of the server (see `prefixtune serve --help`)."""

    model: str = field(default="smollm2-135m", metadata=_help("Base model: a built-in name, an HF dir or .gguf."))
    adapters: str | None = field(
        default=None, metadata=_help("Adapter root: one subdirectory per adapter, all loaded at start.")
    )
    host: str = field(default="127.0.0.1", metadata=_help("Interface to bind."))
    port: int = field(default=8000, metadata=_help("TCP port."))
    served_model_name: str | None = field(
        default=None, metadata=_help("The base model's name in the API (default: --model).")
    )
    api_key: tuple[str, ...] = field(
        default=(), metadata=_help("Admin API key(s): needed for every request and for loading adapters.")
    )
    adapter_keys: str | None = field(
        default=None, metadata=_help('JSON file {"adapter": ["key", ...]}: per-tenant keys for adapters.')
    )
    adapter_cache_mb: float = field(
        default=512.0, metadata=_help("Memory budget of the compiled-prefix LRU cache, in MiB.")
    )
    max_num_seqs: int = field(default=16, metadata=_help("Requests running at once (KV slots, largest batch)."))
    max_num_batched_tokens: int = field(default=256, metadata=_help("Tokens computed per engine step."))
    max_waiting: int = field(default=256, metadata=_help("Queued requests before answering 429."))
    max_model_len: int | None = field(
        default=None,
        metadata=_help(
            "Context limit (prompt + max_tokens + prefix); default: min(the model's, 2048). Every KV slot "
            "preallocates this many positions."
        ),
    )
    max_request_bytes: int = field(default=1 << 20, metadata=_help("Largest request body (413 above)."))
    request_timeout_s: float = field(default=600.0, metadata=_help("Cancel requests running longer (504)."))
    default_max_tokens: int = field(default=256, metadata=_help("max_tokens of chat requests that omit it."))
    max_n: int = field(
        default=8, metadata=_help("Largest n (choices per prompt) a request may ask; each choice is a sequence.")
    )
    drain_timeout_s: float = field(default=30.0, metadata=_help("On shutdown, wait this long for requests."))
    engine: str = field(
        default="prefixtune",
        metadata=_help(
            "Engine: 'prefixtune' (built in: one process, CPU or one GPU) or 'vllm' (vLLM with the prefixtune KV "
            "connector: paged cache, prefix caching, tensor/data parallelism; `make setup-vllm`)."
        ),
    )
    vllm_tensor_parallel_size: int = field(default=1, metadata=_help("vLLM: tensor-parallel size."))
    vllm_data_parallel_size: int = field(default=1, metadata=_help("vLLM: data-parallel size."))
    vllm_dtype: str = field(default="auto", metadata=_help("vLLM: weights dtype (auto, float32, bfloat16, float16)."))
    vllm_gpu_memory_utilization: float = field(default=0.9, metadata=_help("vLLM: share of GPU memory to use."))
    vllm_enable_prefix_caching: bool = field(
        default=True, metadata=_help("vLLM: prefix caching (adapters' placeholder blocks are shared per adapter).")
    )
    vllm_block_size: int | None = field(default=None, metadata=_help("vLLM: KV-cache block size (default: vLLM's)."))
    vllm_kv_cache_gb: float | None = field(
        default=None, metadata=_help("vLLM: KV-cache size in GiB (default: vLLM's; on a CPU, 4).")
    )
    vllm_enforce_eager: bool = field(
        default=False, metadata=_help("vLLM: no torch.compile/CUDA graphs (faster start, slower steps).")
    )
    vllm_kv_dir: str | None = field(
        default=None,
        metadata=_help("vLLM: directory of compiled adapter KV packs (default: the prefixtune cache's vllm-kv/)."),
    )
    allow_unverified_adapters: bool = field(
        default=False,
        metadata=_help(
            "Serve adapters that record no base_model_fingerprint (PEFT directories, hand-made files); off: "
            "refused, since nothing proves they were made for this base model."
        ),
    )
    metrics_require_key: bool = field(
        default=False, metadata=_help("/metrics needs an admin key (--api-key); off: /metrics is open.")
    )
    timeout_keep_alive_s: float = field(
        default=5.0, metadata=_help("Close an idle keep-alive connection after this many seconds (uvicorn).")
    )
    limit_concurrency: int | None = field(
        default=1024,
        metadata=_help("Most open connections (uvicorn answers 503 above); bounds slow clients holding sockets."),
    )

    def problems(self) -> list[str]:
        out = []
        if not 0 < self.port < 65536:
            out.append(f"port={self.port} must be in 1..65535")
        for name in ("max_num_seqs", "max_num_batched_tokens", "max_request_bytes", "default_max_tokens", "max_n"):
            if getattr(self, name) < 1:
                out.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_num_batched_tokens < self.max_num_seqs:
            out.append(
                f"max_num_batched_tokens={self.max_num_batched_tokens} must be >= max_num_seqs={self.max_num_seqs}"
            )
        if self.max_waiting < 0:
            out.append(f"max_waiting={self.max_waiting} must be >= 0")
        if self.adapter_cache_mb <= 0:
            out.append(f"adapter_cache_mb={self.adapter_cache_mb} must be > 0")
        if self.max_model_len is not None and self.max_model_len < 2:
            out.append(f"max_model_len={self.max_model_len} must be >= 2")
        if self.request_timeout_s <= 0 or self.drain_timeout_s < 0:
            out.append("request_timeout_s must be > 0 and drain_timeout_s >= 0")
        return out + self._connection_problems() + self._engine_problems()

    def _engine_problems(self) -> list[str]:
        out = []
        if self.engine not in ENGINES:
            out.append(f"engine={self.engine!r} must be one of {', '.join(ENGINES)}")
        for name in ("vllm_tensor_parallel_size", "vllm_data_parallel_size"):
            if getattr(self, name) < 1:
                out.append(f"{name}={getattr(self, name)} must be >= 1")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            out.append(f"vllm_gpu_memory_utilization={self.vllm_gpu_memory_utilization} must be in (0, 1]")
        if self.vllm_kv_cache_gb is not None and self.vllm_kv_cache_gb <= 0:
            out.append(f"vllm_kv_cache_gb={self.vllm_kv_cache_gb} must be > 0")
        if self.vllm_block_size is not None and self.vllm_block_size < 1:
            out.append(f"vllm_block_size={self.vllm_block_size} must be >= 1")
        return out

    def _connection_problems(self) -> list[str]:
        out = []
        if self.timeout_keep_alive_s <= 0:
            out.append(f"timeout_keep_alive_s={self.timeout_keep_alive_s} must be > 0")
        if self.limit_concurrency is not None and self.limit_concurrency < 1:
            out.append(f"limit_concurrency={self.limit_concurrency} must be >= 1 (or none)")
        return out

    def validate(self) -> ServeConfig:
        """Return self, or raise ConfigError listing every problem."""
        problems = self.problems()
        if problems:
            raise ConfigError(problems, source="serve")
        return self

    def replace(self, **changes: object) -> ServeConfig:
        return dataclasses.replace(self, **changes)
