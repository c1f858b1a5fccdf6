"""`PrefixKV`: the artifact every adapter compiles to (DESIGN.md §1, "the key consequence").

Because prefix outputs are discarded, a prefix acts on the real tokens only through the keys and values each
layer's frozen attention computes from it. Those do not depend on the input, so every method (hidden-state
prefix, kv prefix, soft prompt) compiles to the same thing: per layer, m keys and m values in exactly the form
the layer's attention consumes (after norms, projections and rotary embedding).

One exception, forced by the math: a soft prompt on a bidirectional encoder. Its positions attend to the real
tokens, so its keys/values at every layer after the first depend on the input and cannot be compiled. Such
an adapter "compiles" to its prompt vectors (`prompt_embeddings`), which the injection puts in front of the
token embeddings; its keys and values are empty.
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
        position_convention: how the real tokens are numbered next to this prefix ("shifted": m + j;
            "unshifted": j, as without a prefix).
        fingerprint: the base model it was compiled on (see `core.fingerprint`), or None if unknown.
        prompt_embeddings: (m, d), only for a soft prompt on a bidirectional encoder (see the module
            docstring); keys and values are then empty tuples.
        sites: encoder-decoders: the attention site ("encoder", "decoder", "cross") of every entry of `keys`,
            in the model's slot order (`core.hf.seq2seq`); None for a decoder-only model (one per layer).
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    method: str
    position_convention: str = "shifted"
    fingerprint: dict[str, Any] | None = None
    prompt_embeddings: torch.Tensor | None = None
    sites: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.sites is not None and len(self.sites) != len(self.keys):
            raise ValueError(f"PrefixKV has {len(self.keys)} layers but {len(self.sites)} site names")
        if self.prompt_embeddings is not None:
            if self.keys or self.values or self.prompt_embeddings.ndim != 2:
                raise ValueError("a PrefixKV with prompt_embeddings (m, d) has no keys or values")
            return
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
        if self.prompt_embeddings is not None:
            return int(self.prompt_embeddings.shape[0])
        return int(self.keys[0].shape[-2])

    @property
    def is_prompt(self) -> bool:
        """Whether this is an encoder's soft prompt (`prompt_embeddings`), not per-layer keys/values."""
        return self.prompt_embeddings is not None

    @property
    def num_layers(self) -> int:
        return len(self.keys)

    def site(self, name: str) -> PrefixKV | None:
        """The entries of one attention site as a PrefixKV of its own (None when this prefix has none there)."""
        if self.sites is None:
            raise ValueError("this PrefixKV belongs to a decoder-only model; it has no sites")
        keep = [i for i, s in enumerate(self.sites) if s == name]
        if not keep:
            return None
        return replace(
            self,
            keys=tuple(self.keys[i] for i in keep),
            values=tuple(self.values[i] for i in keep),
            sites=(name,) * len(keep),
        )

    @property
    def nbytes(self) -> int:
        """Memory held by the keys and values, in bytes."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    @property
    def device(self) -> torch.device:
        return self.tensors()[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.tensors()[0].dtype

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Every tensor it holds: keys then values, or the prompt embeddings."""
        if self.prompt_embeddings is not None:
            return (self.prompt_embeddings,)
        return (*self.keys, *self.values)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> PrefixKV:
        """A copy on another device and/or dtype."""
        return replace(
            self,
            keys=tuple(k.to(device=device, dtype=dtype) for k in self.keys),
            values=tuple(v.to(device=device, dtype=dtype) for v in self.values),
            prompt_embeddings=None
            if self.prompt_embeddings is None
            else self.prompt_embeddings.to(device=device, dtype=dtype),
        )

    def detach(self) -> PrefixKV:
        """A copy cut from the autograd graph (for serving and caching)."""
        prompt = None if self.prompt_embeddings is None else self.prompt_embeddings.detach()
        return replace(
            self,
            keys=tuple(k.detach() for k in self.keys),
            values=tuple(v.detach() for v in self.values),
            prompt_embeddings=prompt,
        )
