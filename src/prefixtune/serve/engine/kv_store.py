"""`SlotKVStore`: the engine's own KV cache, preallocated per slot (no transformers cache classes).

Per layer one key and one value tensor of shape (slots, H_kv, max_len, D). A request owns one slot; the keys
of new tokens are written in place, so a decoding step never copies the context (DESIGN.md §5: a growing
`DynamicCache` concatenates every step). The scheduler keeps each step's rows in a contiguous slot range, so
the keys a step attends to are a view `cache[lo:hi, :, :T_kv]`. Prefix keys never enter this cache: the core
injects them per row (`core.inject.prefix_forward`), and positions start at m_row.

A step's rows are left-padded to a common length T (so every row's last token is at T - 1 and the LM head
runs on one position per row); padding is never written, and a padding query attends to its row's first new
token only (any finite choice works; its output is discarded).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class SlotKVStore:
    """Preallocated per-slot keys/values for every layer.

    Args:
        num_slots: requests running at once.
        kv_shapes: per layer, (H_kv, D) of the keys its attention consumes.
        max_len: tokens per slot (the context limit, prefix excluded).
        device, dtype: where and how to store them.
    """

    def __init__(
        self,
        num_slots: int,
        kv_shapes: Sequence[tuple[int, int]],
        max_len: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.num_slots, self.max_len = num_slots, max_len
        self.keys = [torch.zeros(num_slots, H, max_len, D, device=device, dtype=dtype) for H, D in kv_shapes]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.device = torch.device(device)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def move(self, moves: Sequence[tuple[int, int]], length: int) -> None:
        """Copy slots src -> dst (all at once, so permutations are safe), the first `length` positions."""
        if not moves or length <= 0:
            return
        src = torch.tensor([s for s, _ in moves], device=self.device)
        dst = torch.tensor([d for _, d in moves], device=self.device)
        for cache in (*self.keys, *self.values):
            cache[dst, :, :length] = cache[src, :, :length]  # RHS gathers a copy first

    def step_view(self, lo: int, starts: Sequence[int], lengths: Sequence[int]) -> StepView:
        """The `kv_store` for one forward over slots [lo, lo + B), rows left-padded to max(lengths).

        Args:
            lo: first slot of the contiguous range.
            starts: per row, tokens already in the slot (where this step writes).
            lengths: per row, new (real) tokens this step.
        """
        return StepView(self, lo, starts, lengths)


class StepView:
    """Implements the core's `KVStore.update` for one step over a contiguous slot range."""

    def __init__(self, store: SlotKVStore, lo: int, starts: Sequence[int], lengths: Sequence[int]) -> None:
        dev = store.device
        B, T = len(starts), max(lengths)
        self.store, self.lo, self.hi = store, lo, lo + B
        start = torch.tensor(starts, device=dev)  # (B,)
        n = torch.tensor(lengths, device=dev)  # (B,)
        pad = T - n  # (B,)
        self.T_kv = int((start + n).max())
        if self.T_kv > store.max_len:
            raise ValueError(f"a row would hold {self.T_kv} tokens; slots hold {store.max_len}")
        i = torch.arange(T, device=dev)[None, :]  # (1, T)
        is_real = i >= pad[:, None]  # (B, T)
        self.row_idx, self.col_idx = is_real.nonzero(as_tuple=True)  # (N,), (N,) for the N real tokens
        self.slot_idx = self.row_idx + lo
        self.pos_idx = start[self.row_idx] + self.col_idx - pad[self.row_idx]  # (N,)
        limit = start[:, None] + (i - pad[:, None]).clamp(min=0)  # (B, T): last position each query sees
        j = torch.arange(self.T_kv, device=dev)
        self.mask = (j[None, None, :] <= limit[:, :, None])[:, None]  # (B, 1, T, T_kv)
        self.position_offsets = start[:, None] + (i - pad[:, None]).clamp(min=0)  # (B, T) before adding m

    def update(
        self, layer_idx: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Write this step's real keys/values (B, H_kv, T, D) in place; return views over the slot range."""
        k_cache, v_cache = self.store.keys[layer_idx], self.store.values[layer_idx]
        k_cache[self.slot_idx, :, self.pos_idx] = key[self.row_idx, :, self.col_idx].to(k_cache.dtype)  # (N, H, D)
        v_cache[self.slot_idx, :, self.pos_idx] = value[self.row_idx, :, self.col_idx].to(v_cache.dtype)
        keys = k_cache[self.lo : self.hi, :, : self.T_kv]  # (B, H_kv, T_kv, D), a view
        values = v_cache[self.lo : self.hi, :, : self.T_kv]
        return keys.to(key.dtype), values.to(value.dtype), self.mask
