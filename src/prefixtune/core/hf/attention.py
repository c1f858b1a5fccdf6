"""Registering prefix-aware attention with transformers' public AttentionInterface.

transformers calls `ALL_ATTENTION_FUNCTIONS[config._attn_implementation]` from every modern model's attention
module, with keys and values already projected, normed and rotated, and passes the model's forward kwargs
down to it. Registering our function under a name of its own ("prefixtune_sdpa", "prefixtune_eager") and
switching the model to it is the whole hook: nothing rides on `past_key_values`/`cache` or the mask code,
which change between transformers releases (DESIGN.md §5).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from torch import nn
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from prefixtune.core.attention import prefix_attention
from prefixtune.core.hf.layers import decoder_layers
from prefixtune.errors import UnsupportedModelError

PREFIX = "prefixtune_"
SUPPORTED = ("sdpa", "eager")


def _eager_of(module: nn.Module, *args, **kwargs):
    """The model family's own eager attention (each transformers modeling file defines one)."""
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise UnsupportedModelError(f"{type(module).__module__} defines no eager_attention_forward")
    return fn(module, *args, **kwargs)


def _sdpa(*args, **kwargs):
    return ALL_ATTENTION_FUNCTIONS["sdpa"](*args, **kwargs)


_BASE: dict[str, tuple[Callable, bool]] = {"sdpa": (_sdpa, False), "eager": (_eager_of, True)}


def _register(base: str) -> str:
    name = PREFIX + base
    if name not in ALL_ATTENTION_FUNCTIONS:
        fn, additive = _BASE[base]
        AttentionInterface.register(name, functools.partial(prefix_attention, base_fn=fn, mask_is_additive=additive))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    return name


def base_implementation(model: nn.Module) -> str:
    """The attention implementation under ours ("sdpa" or "eager")."""
    impl = model.config._attn_implementation or "eager"
    return impl.removeprefix(PREFIX)


def install(model: nn.Module) -> None:
    """Switch `model` to prefix-aware attention. Idempotent.

    Raises:
        UnsupportedModelError: for attention implementations other than sdpa and eager.
    """
    base = base_implementation(model)
    if base not in SUPPORTED:
        raise UnsupportedModelError(
            f"attention implementation {base!r} is not supported; load the model with "
            f"attn_implementation='sdpa' or 'eager'"
        )
    for idx, layer in enumerate(decoder_layers(model)):
        for sub in layer.modules():
            if "Attention" in type(sub).__name__:
                sub._prefixtune_layer_idx = idx
    _set_implementation(model, _register(base))


def uninstall(model: nn.Module) -> None:
    """Give the model back its own attention implementation."""
    _set_implementation(model, base_implementation(model))


def _set_implementation(model: nn.Module, name: str) -> None:
    # Every (sub)config carrying the attribute is switched, as set_attn_implementation does.
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = name
