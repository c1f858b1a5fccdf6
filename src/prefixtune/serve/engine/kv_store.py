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
        row, col = is_real.nonzero(as_tuple=True)  # (N,), (N,) for the N real tokens, row-major
        # Without padding every (row, col) is real and the gather below is skipped.
        self.real = None if bool(is_real.all()) else row * T + col  # (N,) into the flattened (B*T)
        self._dst: dict[int, torch.Tensor] = {}
        self._slot_pos = (row + lo, start[row] + col - pad[row])  # (N,), (N,)
        limit = start[:, None] + (i - pad[:, None]).clamp(min=0)  # (B, T): last position each query sees
        j = torch.arange(self.T_kv, device=dev)
        self.mask = (j[None, None, :] <= limit[:, :, None])[:, None]  # (B, 1, T, T_kv)
        self.position_offsets = start[:, None] + (i - pad[:, None]).clamp(min=0)  # (B, T) before adding m

    def update(
        self, layer_idx: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Write this step's real keys/values (B, H_kv, T, D) in place; return views over the slot range."""
        k_cache, v_cache = self.store.keys[layer_idx], self.store.values[layer_idx]
        # index_copy_ on a flat (S*H*L, D) view: advanced indexing with a slice between the indexed dims
        # (cache[slots, :, positions] = ...) is orders of magnitude slower on CPU.
        dst = self._flat_destinations(k_cache.shape[1])
        for cache, new in ((k_cache, key), (v_cache, value)):
            cache.view(-1, cache.shape[-1]).index_copy_(0, dst, self._rows(new).to(cache.dtype))
        keys = k_cache[self.lo : self.hi, :, : self.T_kv]  # (B, H_kv, T_kv, D), a view
        values = v_cache[self.lo : self.hi, :, : self.T_kv]
        return keys.to(key.dtype), values.to(value.dtype), self.mask

    def _flat_destinations(self, H: int) -> torch.Tensor:
        """Row indices into cache.view(S * H * L, D) for every real token and head, in `_rows` order."""
        dst = self._dst.get(H)
        if dst is None:
            slot, pos = self._slot_pos
            heads = torch.arange(H, device=slot.device)[None, :]  # (1, H)
            dst = ((slot[:, None] * H + heads) * self.store.max_len + pos[:, None]).reshape(-1)  # (N*H,)
            self._dst[H] = dst
        return dst

    def _rows(self, new: torch.Tensor) -> torch.Tensor:
        """(B, H, T, D) -> (N*H, D): the real tokens, token-major then head."""
        B, H, T, D = new.shape
        flat = new.transpose(1, 2).reshape(B * T, H, D)  # (B*T, H, D)
        if self.real is not None:
            flat = flat.index_select(0, self.real)  # (N, H, D)
        return flat.reshape(-1, D)
