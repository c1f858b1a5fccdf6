"""`PrefixKV`: the artifact every adapter compiles to (DESIGN.md §1, "the key consequence").

Because prefix outputs are discarded, a prefix acts on the real tokens only through the keys and values each
layer's frozen attention computes from it. Those do not depend on the input, so every method (hidden-state
prefix, kv prefix, soft prompt) compiles to the same thing: per layer, m keys and m values in exactly the form
the layer's attention consumes (after norms, projections and rotary embedding).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch


@dataclass(frozen=True, slots=True)
class PrefixKV:
    """Per-layer key/value prefix of one adapter.

    Attributes:
        keys: one tensor per layer, shape (H_kv, m, D), as the layer's attention consumes them.
        values: one tensor per layer, shape (H_kv, m, D).
        method: the parametrization it was compiled from ("prefix", "kv" or "prompt").
        position_convention: how the real tokens are numbered next to this prefix ("shifted": m + j).
        fingerprint: the base model it was compiled on (see `core.fingerprint`), or None if unknown.
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    method: str
    position_convention: str = "shifted"
    fingerprint: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if len(self.keys) != len(self.values) or not self.keys:
            raise ValueError(
                f"PrefixKV needs one key and one value tensor per layer, got "
                f"{len(self.keys)} keys and {len(self.values)} values"
            )
        m = self.keys[0].shape[-2]
        for k, v in zip(self.keys, self.values, strict=True):
            if k.ndim != 3 or v.ndim != 3 or k.shape[-2] != m or v.shape[-2] != m:
                raise ValueError(
                    f"PrefixKV tensors must be (H_kv, m, D) with one m; got {tuple(k.shape)} "
                    f"and {tuple(v.shape)} (m={m})"
                )

    @property
    def num_virtual_tokens(self) -> int:
        """m, the number of prefix positions per layer."""
        return int(self.keys[0].shape[-2])

    @property
    def num_layers(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        """Memory held by the keys and values, in bytes."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    @property
    def device(self) -> torch.device:
        return self.keys[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.keys[0].dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> PrefixKV:
        """A copy on another device and/or dtype."""
        return replace(
            self,
            keys=tuple(k.to(device=device, dtype=dtype) for k in self.keys),
            values=tuple(v.to(device=device, dtype=dtype) for v in self.values),
        )

    def detach(self) -> PrefixKV:
        """A copy cut from the autograd graph (for serving and caching)."""
        return replace(self, keys=tuple(k.detach() for k in self.keys), values=tuple(v.detach() for v in self.values))
