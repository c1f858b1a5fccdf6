"""`PrefixKVConnector`: prefix adapters in vLLM's paged KV cache, through vLLM's KV-connector API (v1).

Load it with
    kv_transfer_config={"kv_connector": "PrefixKVConnector",
                        "kv_connector_module_path": "prefixtune.vllm.connector",
                        "kv_role": "kv_both",
                        "kv_connector_extra_config": {"kv_root": "/path/to/kv-packs"}}
and address adapters as `prefixtune.vllm.addressing` describes (m placeholders in front of the prompt).

Scheduler side: a request naming adapter A has its first m_A positions reported as externally available
(`get_num_new_matched_tokens`); after vLLM allocates its blocks, the slots of those positions go to the
worker in the step's metadata. With prefix caching, vLLM may already hold some of A's full placeholder blocks
(same salt, same placeholders): only the positions after them are written.

Worker side: before the forward pass, each attention layer's slice of A's keys/values is written into the
slots through the attention backend's own `do_kv_cache_update` (the CPU backend packs blocks in an
ISA-specific order, so indexing the cache tensor directly would be wrong). Each tensor-parallel rank writes
only its kv heads. A pack that cannot be used marks the request's blocks as failed, and vLLM fails the
request (`kv_load_failure_policy="fail"`, its default) instead of serving placeholders as text.

The connector API is experimental in vLLM; this module is tested with the vLLM range pinned in pyproject.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

from prefixtune.errors import AdapterFormatError
from prefixtune.vllm.addressing import PLACEHOLDER_TOKEN_ID, adapter_of, pack_path
from prefixtune.vllm.device_store import DeviceKVStore, ServedGeometry, read_num_virtual_tokens

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.forward_context import ForwardContext
    from vllm.v1.attention.backend import AttentionMetadata
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.core.sched.output import SchedulerOutput
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

logger = logging.getLogger(__name__)

DEFAULT_DEVICE_BUDGET_MB = 1024.0


@dataclass(frozen=True, slots=True)
class PrefixLoad:
    """Write positions `start..start+len(slots)-1` of adapter `adapter_id` into `slots` (one step's work).

    `adapter_id` is None when the request's adapter could not be resolved: the worker then reports the
    blocks as failed, so vLLM fails the request."""

    request_id: str
    adapter_id: str | None
    start: int
    slots: tuple[int, ...]
    block_ids: tuple[int, ...]
    problem: str = ""


@dataclass
class PrefixConnectorMetadata(KVConnectorMetadata):
    """The loads of one scheduler step."""

    loads: list[PrefixLoad] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Plan:
    adapter_id: str | None
    num_virtual_tokens: int
    problem: str = ""


class PrefixKVConnector(KVConnectorBase_V1):
    """Writes prefixtune adapters' compiled keys/values at the placeholder positions of their requests."""

    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: KVCacheConfig) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        extra = self._kv_transfer_config.kv_connector_extra_config or {}
        if "kv_root" not in extra:
            raise ValueError('PrefixKVConnector needs kv_connector_extra_config={"kv_root": "<dir of KV packs>"}')
        self.kv_root = Path(extra["kv_root"])
        self.budget_bytes = int(float(extra.get("device_budget_mb", DEFAULT_DEVICE_BUDGET_MB)) * 2**20)
        self.block_size = vllm_config.cache_config.block_size
        self._vllm_config = vllm_config
        # scheduler side
        self._num_virtual_tokens: dict[tuple[str, int, int], int] = {}
        self._allocated: dict[str, tuple[_Plan, int, tuple[int, ...]]] = {}
        # worker side
        self._store: DeviceKVStore | None = None
        self._failed_blocks: set[int] = set()

    # ----- scheduler side ---------------------------------------------------------------------------
    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int) -> tuple[int, bool]:
        """Positions 0..m-1 of an adapter's request are external; vLLM may hold the first ones already."""
        plan = self._plan(request)
        if plan is None:
            return 0, False
        return max(0, plan.num_virtual_tokens - num_computed_tokens), False

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int) -> None:
        if num_external_tokens <= 0:
            return
        plan = self._plan(request)
        if plan is None:  # cannot happen: external tokens were reported for this request
            return
        block_ids = tuple(blocks.get_block_ids()[0])
        self._allocated[request.request_id] = (plan, num_external_tokens, block_ids)

    def build_connector_meta(self, scheduler_output: SchedulerOutput) -> PrefixConnectorMetadata:
        """Every allocation of this step is a synchronous load scheduled in this step."""
        meta = PrefixConnectorMetadata()
        for request_id, (plan, count, block_ids) in self._allocated.items():
            start = plan.num_virtual_tokens - count
            positions = range(start, plan.num_virtual_tokens)
            slots = tuple(block_ids[p // self.block_size] * self.block_size + p % self.block_size for p in positions)
            touched = tuple(sorted({block_ids[p // self.block_size] for p in positions}))
            meta.loads.append(PrefixLoad(request_id, plan.adapter_id, start, slots, touched, plan.problem))
        self._allocated.clear()
        return meta

    def request_finished(self, request: Request, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        self._allocated.pop(request.request_id, None)
        return False, None

    def _plan(self, request: Request) -> _Plan | None:
        """What the request asks for; a request that cannot be served gets a plan that fails it."""
        try:
            adapter_id = adapter_of(request.kv_transfer_params)
        except ValueError as exc:
            return self._failing(request, str(exc))
        if adapter_id is None:
            return None
        try:
            m = self._m(adapter_id)
        except AdapterFormatError as exc:
            return self._failing(request, str(exc))
        prompt = request.prompt_token_ids or []
        if len(prompt) <= m or any(t != PLACEHOLDER_TOKEN_ID for t in prompt[:m]):
            return self._failing(
                request,
                f"a request for adapter {adapter_id!r} must start with {m} placeholder tokens "
                f"({PLACEHOLDER_TOKEN_ID}) followed by at least one prompt token",
            )
        return _Plan(adapter_id, m)

    def _failing(self, request: Request, problem: str) -> _Plan:
        """A plan over the leading placeholders (at least one position), whose load the worker fails."""
        prompt = request.prompt_token_ids or []
        leading = next((i for i, t in enumerate(prompt) if t != PLACEHOLDER_TOKEN_ID), len(prompt))
        return _Plan(None, max(1, min(leading, len(prompt) - 1)), problem)

    def _m(self, adapter_id: str) -> int:
        """m of a pack, cached per file version (header read once)."""
        try:
            stat = pack_path(self.kv_root, adapter_id).stat()
        except OSError:
            raise AdapterFormatError(f"no KV pack for adapter {adapter_id!r} in {self.kv_root}") from None
        key = (adapter_id, stat.st_mtime_ns, stat.st_size)
        if key not in self._num_virtual_tokens:
            self._num_virtual_tokens[key] = read_num_virtual_tokens(self.kv_root, adapter_id)
        return self._num_virtual_tokens[key]

    # ----- worker side ------------------------------------------------------------------------------
    def start_load_kv(self, forward_context: ForwardContext, **kwargs: Any) -> None:
        """Write this step's prefixes into the paged cache, before any layer runs."""
        meta = self._get_connector_metadata()
        if not isinstance(meta, PrefixConnectorMetadata) or not meta.loads:
            return
        layers = _attention_layers(forward_context)
        store = self._device_store(layers)
        for load in meta.loads:
            try:
                if load.adapter_id is None:
                    raise AdapterFormatError(load.problem)
                kv = store.get(load.adapter_id)
                if kv.num_virtual_tokens < load.start + len(load.slots):
                    raise AdapterFormatError(
                        f"KV pack of adapter {load.adapter_id!r} changed under the scheduler "
                        f"(m={kv.num_virtual_tokens})"
                    )
                _write(layers, kv.keys, kv.values, load)
            except AdapterFormatError as exc:
                logger.error("request %s cannot be served: %s", load.request_id, exc)
                self._failed_blocks.update(load.block_ids)

    def get_block_ids_with_load_errors(self) -> set[int]:
        failed, self._failed_blocks = self._failed_blocks, set()
        return failed

    def wait_for_layer_load(self, layer_name: str) -> None:
        return  # loads are synchronous, done in start_load_kv

    def save_kv_layer(
        self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: AttentionMetadata, **kwargs: Any
    ) -> None:
        return  # prefixes are only ever read

    def wait_for_save(self) -> None:
        return

    def _device_store(self, layers: dict[int, Any]) -> DeviceKVStore:
        if self._store is None:
            from vllm.distributed.parallel_state import (
                get_tensor_model_parallel_rank,
                get_tensor_model_parallel_world_size,
            )

            model_config = self._vllm_config.model_config
            any_layer = next(iter(layers.values()))
            geometry = ServedGeometry(
                num_layers=int(model_config.hf_text_config.num_hidden_layers),
                num_kv_heads=model_config.get_total_num_kv_heads(),
                local_kv_heads=int(any_layer.num_kv_heads),
                head_size=int(any_layer.head_size),
                tp_rank=get_tensor_model_parallel_rank(),
                tp_size=get_tensor_model_parallel_world_size(),
            )
            device = any_layer.kv_cache.device
            self._store = DeviceKVStore(self.kv_root, geometry, device, model_config.dtype, self.budget_bytes)
        return self._store


def _attention_layers(forward_context: ForwardContext) -> dict[int, Any]:
    """Layer index -> vLLM attention layer holding a KV cache (this pipeline stage's layers only)."""
    from vllm.model_executor.models.utils import extract_layer_index

    out = {}
    for name, layer in forward_context.no_compile_layers.items():
        cache = getattr(layer, "kv_cache", None)
        if isinstance(cache, torch.Tensor) and cache.numel() > 0 and hasattr(layer, "impl"):
            out[extract_layer_index(name)] = layer
    return out


def _write(
    layers: dict[int, Any], keys: tuple[torch.Tensor, ...], values: tuple[torch.Tensor, ...], load: PrefixLoad
) -> None:
    end = load.start + len(load.slots)
    device = next(iter(layers.values())).kv_cache.device  # one worker: every layer's cache on one device
    slots = torch.tensor(load.slots, dtype=torch.long, device=device)  # built once, not per layer
    for index, layer in layers.items():
        key = keys[index][load.start : end]  # (count, H_kv_local, D)
        value = values[index][load.start : end]
        layer.impl.do_kv_cache_update(layer, key, value, layer.kv_cache, slots)
