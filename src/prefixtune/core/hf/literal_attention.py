"""The reference path's attention: the model family's own eager attention over [K^l ; K], [V^l ; V].

Used only by `core.reference_encoder`, the literal specification of encoders: it concatenates the given
per-layer keys/values (method "kv") in front of the layer's own and runs the family's `eager_attention_forward`
with the mask the reference built. Nothing of the fast path (`core.attention`, `PrefixBatch`) is involved.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from prefixtune.core.hf.attention import _configs, _eager_of

NAME = "prefixtune_literal"
# The keys/values the layer now running prepends: (B, H_kv, m, D) each, or None.
_LAYER_KV: ContextVar[tuple[torch.Tensor, torch.Tensor] | None] = ContextVar("prefixtune_literal_kv", default=None)


def _literal(module: nn.Module, query, key, value, attention_mask, **kwargs):
    kv = _LAYER_KV.get()
    if kv is not None:
        key = torch.cat([kv[0].to(key.dtype), key], dim=2)  # (B, H_kv, m + n, D)
        value = torch.cat([kv[1].to(value.dtype), value], dim=2)
    kwargs.pop("prefix_batch", None)
    kwargs.pop("kv_capture", None)
    return _eager_of(module, query, key, value, attention_mask, **kwargs)


@contextmanager
def literal_attention(model: nn.Module) -> Iterator[None]:
    """Run `model`'s attention as `_literal` inside the block (its implementations are restored after)."""
    if NAME not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(NAME, _literal)
        AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
    configs = [c for c in _configs(model) if hasattr(c, "_attn_implementation")]
    before = [c._attn_implementation for c in configs]
    for config in configs:
        config._attn_implementation = NAME
    try:
        yield
    finally:
        for config, implementation in zip(configs, before, strict=True):
            config._attn_implementation = implementation


@contextmanager
def layer_kv(keys: torch.Tensor | None, values: torch.Tensor | None) -> Iterator[None]:
    """Make the next layer's literal attention prepend `keys`/`values` (B, H_kv, m, D); None: nothing."""
    token = _LAYER_KV.set(None if keys is None else (keys, values))
    try:
        yield
    finally:
        _LAYER_KV.reset(token)
