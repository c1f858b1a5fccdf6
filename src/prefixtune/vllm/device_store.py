"""The worker side's adapters: KV packs read from `kv_root`, checked, cut to this rank's heads, kept on the
device in an LRU under a memory budget.

One job: `adapter_id -> per-layer (m, H_kv_local, D) keys and values` in the layout vLLM's cache-update
methods take. Checks before an adapter is used: the pack's own validation (`read_kv_pack`: format, version,
layers), the position convention, layer count, kv heads and head size against the served model, NaN/Inf.
A bad pack raises `AdapterFormatError` and leaves the store as it was. Depends on torch and `prefixtune.io`;
no vllm import, so it is tested without an engine.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from prefixtune.errors import AdapterFormatError
from prefixtune.io.kv_pack import read_kv_pack
from prefixtune.vllm.addressing import pack_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServedGeometry:
    """What one worker serves: per layer index, the kv heads this rank holds and the head size.

    Attributes:
        num_layers: attention layers of the model.
        num_kv_heads: the model's kv heads per layer (all ranks together).
        local_kv_heads: kv heads this rank holds.
        head_size: D.
        tp_rank: this worker's tensor-parallel rank.
        tp_size: tensor-parallel world size.
    """

    num_layers: int
    num_kv_heads: int
    local_kv_heads: int
    head_size: int
    tp_rank: int = 0
    tp_size: int = 1

    def head_slice(self) -> slice:
        """This rank's kv heads. vLLM splits them evenly over ranks, or replicates them when there are fewer
        kv heads than ranks (rank r then holds head r * H_kv // tp_size)."""
        if self.num_kv_heads >= self.tp_size:
            start = self.tp_rank * self.local_kv_heads
        else:
            start = self.tp_rank * self.num_kv_heads // self.tp_size
        return slice(start, start + self.local_kv_heads)


@dataclass(frozen=True, slots=True)
class DeviceKV:
    """One adapter on the device: per layer, keys and values as (m, H_kv_local, D)."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.keys[0].shape[0])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


def read_num_virtual_tokens(kv_root: str | Path, adapter_id: str) -> int:
    """m of a pack, from its header only (the scheduler side needs no tensors)."""
    from safetensors import SafetensorError, safe_open

    path = pack_path(kv_root, adapter_id)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return int((handle.metadata() or {})["num_virtual_tokens"])
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise AdapterFormatError(f"KV pack of adapter {adapter_id!r} cannot be read ({exc})") from None


def load_device_kv(
    path: Path, geometry: ServedGeometry, device: torch.device, dtype: torch.dtype, adapter_id: str = ""
) -> DeviceKV:
    """Read, check and place one pack. Raises AdapterFormatError naming what does not fit."""
    kv = read_kv_pack(path).prefix_kv
    where = f"KV pack of adapter {adapter_id!r}"
    if kv.position_convention != "shifted":
        raise AdapterFormatError(
            f"{where}: position convention {kv.position_convention!r}; vLLM numbers real tokens m + j "
            "('shifted'), so only such adapters can be served on it"
        )
    if kv.num_layers != geometry.num_layers:
        raise AdapterFormatError(f"{where} has {kv.num_layers} layers; the served model has {geometry.num_layers}")
    keys, values = [], []
    for layer, (k, v) in enumerate(zip(kv.keys, kv.values, strict=True)):
        want = (geometry.num_kv_heads, geometry.head_size)
        if (k.shape[0], k.shape[2]) != want or (v.shape[0], v.shape[2]) != want:
            raise AdapterFormatError(
                f"{where}: layer {layer} has keys {tuple(k.shape)} / values {tuple(v.shape)} as (H_kv, m, D); "
                f"the served model needs H_kv={want[0]}, D={want[1]}: it was made for another base model"
            )
        if not (bool(torch.isfinite(k).all()) and bool(torch.isfinite(v).all())):
            raise AdapterFormatError(f"{where}: layer {layer} holds NaN/Inf values; the adapter is broken")
        heads = geometry.head_slice()
        # (H_kv, m, D) -> this rank's heads as (m, H_local, D), the layout of vLLM's cache-update methods
        keys.append(k[heads].transpose(0, 1).to(device=device, dtype=dtype).contiguous())
        values.append(v[heads].transpose(0, 1).to(device=device, dtype=dtype).contiguous())
    return DeviceKV(tuple(keys), tuple(values))


class DeviceKVStore:
    """Adapters on the device, least recently used evicted first beyond `budget_bytes` (at least one stays).

    Args:
        kv_root: the directory of KV packs (`<adapter_id>.kv.safetensors`).
        geometry: what this worker serves.
        device, dtype: where and how the keys/values are kept (the KV cache's).
        budget_bytes: device memory the store may hold.
    """

    def __init__(
        self, kv_root: str | Path, geometry: ServedGeometry, device: torch.device, dtype: torch.dtype, budget_bytes: int
    ) -> None:
        self.kv_root, self.geometry, self.device, self.dtype = Path(kv_root), geometry, device, dtype
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, DeviceKV] = OrderedDict()
        self.num_loads = 0  # packs read from disk (a repeat use of a resident adapter reads nothing)

    def get(self, adapter_id: str) -> DeviceKV:
        """The adapter's keys/values, read from its pack if not resident. Raises AdapterFormatError."""
        entry = self._entries.get(adapter_id)
        if entry is not None:
            self._entries.move_to_end(adapter_id)
            return entry
        try:
            path = pack_path(self.kv_root, adapter_id)
        except ValueError as exc:
            raise AdapterFormatError(str(exc)) from None
        entry = load_device_kv(path, self.geometry, self.device, self.dtype, adapter_id)
        self.num_loads += 1
        self._entries[adapter_id] = entry
        while sum(e.nbytes for e in self._entries.values()) > self.budget_bytes and len(self._entries) > 1:
            evicted, _ = self._entries.popitem(last=False)
            logger.info("adapter %s evicted from the device store", evicted)
        return entry

    def __contains__(self, adapter_id: str) -> bool:
        return adapter_id in self._entries

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())
