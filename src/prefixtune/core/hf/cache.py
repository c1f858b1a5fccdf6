"""transformers' own key/value cache, used only by the reference path of method "kv".

The reference path must not go through prefixtune's attention mechanism; handing the model a cache already
holding the prefix makes its own attention concatenate [prefix ; keys] (what PEFT does). The cache argument
was renamed from `past_key_values` to `cache` in transformers 5.20; which one a model takes is read from its
forward's signature, not from a version number.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn
from transformers import DynamicCache


def cache_argument(model: nn.Module) -> str:
    """The name under which `model.forward` takes a cache ("cache" on transformers >= 5.20)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def prefilled_cache(model: nn.Module, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> DynamicCache:
    """A cache whose layer l already holds keys[l], values[l], each (B, H_kv, m, D)."""
    cache = DynamicCache(config=model.config)
    for layer, (k, v) in enumerate(zip(keys, values, strict=True)):
        cache.update(k, v, layer)
    return cache
