"""`PrefixBatch`: the per-row prefixes of one forward pass, stacked per layer.

Rows may use different adapters with different m, or none. Row r's prefix occupies columns [0, m_r) of a
(B, H_kv, M, D) tensor, M = max m_r; `valid` marks which columns are real so attention masks the rest.
Soft prompts on an encoder (`PrefixKV.prompt_embeddings`) are stacked apart, right-aligned in (B, M_p, d)
slots, so that every row's prompt ends right before its first token (sliding-window attention measures
distances in sequence slots).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

import torch

from prefixtune.core.prefix_kv import PrefixKV


class KVStore(Protocol):
    """A KV cache owned by the caller (the serving engine), used instead of transformers' cache classes."""

    def update(
        self, layer_idx: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store this step's keys/values and return what the step attends to.

        Args:
            layer_idx: the decoder layer.
            key, value: (B, H_kv, T_new, D) for the tokens of this step.

        Returns:
            keys_all, values_all: (B, H_kv, T_kv, D); mask: (B, 1, T_new, T_kv) bool, True = may attend.
            Every query row, padding rows included, must be allowed at least one key (a row with none
            would give NaN in softmax); allowing a padding query its own position is enough.
        """
        ...


@dataclass(eq=False)
class PrefixBatch:
    """Stacked per-row prefixes for one batch (see module docstring).

    Attributes:
        keys, values: per layer (B or 1, H_kv, M, D); batch 1 when every row shares one prefix.
        valid: (B, M) bool, True where row r has a prefix position.
        lengths: (B,) long, m_r (0 for rows without a key/value prefix).
        store: optional caller-owned KV cache (serving); None means transformers' own cache or none.
        shifts: (B,) long, how far each row's real-token positions move: m_r under the "shifted" convention,
            0 under "unshifted" or without an adapter. None: `lengths` (every row "shifted").
        prompts: (B, M_p, d) encoder soft prompts, right-aligned (zeros where a row has fewer), or None.
        prompt_valid: (B, M_p) bool, True where row r has a prompt slot; None without prompts.
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    valid: torch.Tensor
    lengths: torch.Tensor
    store: KVStore | None = None
    shifts: torch.Tensor | None = None
    prompts: torch.Tensor | None = None
    prompt_valid: torch.Tensor | None = None
    _expanded: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, repr=False, compare=False
    )
    # One derived mask, keyed by the transformers mask object it came from (see `memo`); not shared by copies.
    _memo: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def is_empty(self) -> bool:
        """True when no row has a prefix (the bare model runs untouched)."""
        return not self.keys

    @property
    def batch_size(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def position_shifts(self) -> torch.Tensor:
        """(B,) long: how far each row's real-token positions are shifted (see `shifts`)."""
        return self.lengths if self.shifts is None else self.shifts

    @property
    def has_prompts(self) -> bool:
        """Whether some row carries an encoder soft prompt (which enters at the embeddings, not attention)."""
        return self.prompts is not None

    @classmethod
    def build(
        cls,
        prefix_kvs: Sequence[PrefixKV | None],
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        store: KVStore | None = None,
    ) -> PrefixBatch:
        """Stack one `PrefixKV` (or None) per row.

        Rows that share one PrefixKV object are stored once and broadcast, so a training batch on one
        adapter costs no copy per row.
        """
        if device is None and any(kv is not None for kv in prefix_kvs):
            device = next(kv for kv in prefix_kvs if kv is not None).device
        shifts = torch.tensor([_shift(kv) for kv in prefix_kvs], dtype=torch.long, device=device)
        prompts, prompt_valid = _stack_prompts(prefix_kvs, device, dtype)
        layered = [None if kv is None or kv.is_prompt else kv for kv in prefix_kvs]
        out = cls._build_layered(layered, device=device, dtype=dtype, store=store)
        out.shifts, out.prompts, out.prompt_valid = shifts, prompts, prompt_valid
        return out

    @classmethod
    def _build_layered(
        cls,
        prefix_kvs: Sequence[PrefixKV | None],
        *,
        device: torch.device | None,
        dtype: torch.dtype | None,
        store: KVStore | None,
    ) -> PrefixBatch:
        """The per-layer key/value part of `build` (prompt rows already replaced by None)."""
        lengths = torch.tensor([0 if kv is None else kv.num_virtual_tokens for kv in prefix_kvs], dtype=torch.long)
        present = [kv for kv in prefix_kvs if kv is not None]
        lengths = lengths.to(device) if device is not None else lengths
        if not present:
            return cls((), (), torch.zeros(len(prefix_kvs), 0, dtype=torch.bool, device=device), lengths, store)
        M = int(lengths.max())
        valid = torch.arange(M, device=lengths.device)[None, :] < lengths[:, None]  # (B, M)
        shared = all(kv is present[0] for kv in prefix_kvs)
        num_layers = present[0].num_layers
        if any(kv.num_layers != num_layers for kv in present):
            raise ValueError("all prefixes in a batch must have the same number of layers")
        keys, values = [], []
        for layer in range(num_layers):
            if shared:
                k = present[0].keys[layer][None]  # (1, H_kv, M, D)
                v = present[0].values[layer][None]
            else:
                k = _stack_layer([None if kv is None else kv.keys[layer] for kv in prefix_kvs], M)
                v = _stack_layer([None if kv is None else kv.values[layer] for kv in prefix_kvs], M)
            keys.append(k.to(device=device, dtype=dtype))
            values.append(v.to(device=device, dtype=dtype))
        return cls(tuple(keys), tuple(values), valid, lengths, store)

    def at(self, layer_idx: int) -> tuple[PrefixBatch, int]:
        """The batch and layer index one attention module reads (itself; an encoder-decoder's per-site batch
        maps its slots to sites, see `core.seq2seq_batch`)."""
        return self, layer_idx

    def memo(self, key: tuple, mask: torch.Tensor | None, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """`build()`, reused while the same `mask` object and `key` come back.

        transformers hands every layer of one forward the same mask object, so what attention derives from it
        (the mask widened by the prefix columns) is built once per forward instead of once per layer. The
        memo holds the mask itself, so an identity match can never be a recycled object.
        """
        hit = self._memo  # read once: a racing writer can only cause a rebuild
        if hit is not None and hit[0] is mask and hit[1] == key:
            return hit[2]
        out = build()
        self._memo = (mask, key, out)
        return out

    def layer(self, layer_idx: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keys (b, H_kv, M, D), values and valid (batch_size, M) for one layer, for a query batch.

        `generate` with beams or several return sequences repeats each input row k times
        (`repeat_interleave`), so a query batch of k * B rows is served by repeating each prefix row k times.
        """
        k, v = self.keys[layer_idx], self.values[layer_idx]
        if batch_size == self.batch_size:
            return k, v, self.valid
        if batch_size % self.batch_size != 0:
            raise ValueError(f"query batch {batch_size} is not a multiple of the prefix batch {self.batch_size}")
        cached = self._expanded.get((layer_idx, batch_size))
        if cached is None:
            rep = batch_size // self.batch_size
            valid = self.valid.repeat_interleave(rep, dim=0)
            if k.shape[0] != 1:
                k, v = k.repeat_interleave(rep, dim=0), v.repeat_interleave(rep, dim=0)
            cached = (k, v, valid)
            self._expanded[(layer_idx, batch_size)] = cached
        return cached


def _shift(kv: PrefixKV | None) -> int:
    """How far a row's real-token positions move next to `kv` (its position convention)."""
    if kv is None or kv.position_convention == "unshifted":
        return 0
    return kv.num_virtual_tokens


def _stack_prompts(
    prefix_kvs: Sequence[PrefixKV | None], device: torch.device | None, dtype: torch.dtype | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Encoder soft prompts, right-aligned: (B, M_p, d) and valid (B, M_p); (None, None) without any."""
    rows = [kv.prompt_embeddings if kv is not None and kv.is_prompt else None for kv in prefix_kvs]
    ref = next((p for p in rows if p is not None), None)
    if ref is None:
        return None, None
    M, d = max(p.shape[0] for p in rows if p is not None), ref.shape[1]
    slots, valid = [], torch.zeros(len(rows), M, dtype=torch.bool, device=device)
    for r, p in enumerate(rows):
        m = 0 if p is None else p.shape[0]
        pad = ref.new_zeros(M - m, d)
        slots.append(pad if p is None else torch.cat([pad, p], dim=0))
        valid[r, M - m :] = True
    return torch.stack(slots).to(device=device, dtype=dtype), valid


def _stack_layer(rows: list[torch.Tensor | None], M: int) -> torch.Tensor:
    """Stack per-row (H_kv, m_r, D) tensors into (B, H_kv, M, D), zero-filled past m_r."""
    ref = next(t for t in rows if t is not None)
    H, _, D = ref.shape
    out = []
    for t in rows:
        if t is None:
            out.append(ref.new_zeros(H, M, D))
        elif t.shape[1] < M:
            out.append(torch.cat([t, t.new_zeros(H, M - t.shape[1], D)], dim=1))
        else:
            out.append(t)
    return torch.stack(out, dim=0)


# `generate` refuses forward kwargs it does not know, so for generation the batch's prefixes are bound to the
# running context instead of passed as a kwarg. A ContextVar is per thread (and per asyncio task).
_ACTIVE: ContextVar[PrefixBatch | None] = ContextVar("prefixtune_active_prefix_batch", default=None)


@contextmanager
def active_prefix_batch(batch: PrefixBatch) -> Iterator[None]:
    """Make `batch` the prefixes of every forward pass run in this context without a `prefix_batch` kwarg."""
    token = _ACTIVE.set(batch)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def current_prefix_batch() -> PrefixBatch | None:
    """The batch bound by `active_prefix_batch`, if any."""
    return _ACTIVE.get()
