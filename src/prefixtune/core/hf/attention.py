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
from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from prefixtune.core.attention import prefix_attention
from prefixtune.core.hf.encoder import encoder_family
from prefixtune.core.hf.encoder_prompt import add_prompt_hooks
from prefixtune.core.hf.layers import decoder_layers
from prefixtune.core.hf.seq2seq import attention_slots, is_encoder_decoder
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


@dataclass(slots=True)
class _Installed:
    """What `install` changed, so that `uninstall` can put it back exactly."""

    implementations: list[tuple[Any, Any]]  # (config, its _attn_implementation before), in model.modules() order
    hooks: list[Any]  # handles of the hooks it registered (an encoder's soft-prompt hooks)


def install(model: nn.Module) -> None:
    """Switch `model` to prefix-aware attention, recording what it changes (undone by `uninstall`). Idempotent.

    Raises:
        UnsupportedModelError: for attention implementations other than sdpa and eager, and for encoders of
            an unsupported family.
    """
    if is_installed(model):
        if is_encoder_decoder(model):  # a config shared with an installed twin: this model's slots need numbers
            _number_slots(model)
        return
    is_encoder = encoder_family(model) is not None  # refuses unsupported encoders before changing anything
    base = base_implementation(model)
    if base not in SUPPORTED:
        raise UnsupportedModelError(
            f"attention implementation {base!r} is not supported; load the model with "
            f"attn_implementation='sdpa' or 'eager'"
        )
    name = _register(base)
    configs = [c for c in _configs(model) if hasattr(c, "_attn_implementation")]
    record = _Installed([(c, c._attn_implementation) for c in configs], [])
    if is_encoder_decoder(model):
        _number_slots(model)
    else:
        layers = decoder_layers(model)
        for idx, layer in enumerate(layers):
            for sub in layer.modules():
                if "Attention" in type(sub).__name__:
                    sub._prefixtune_layer_idx = idx
        if is_encoder:
            record.hooks = add_prompt_hooks(model, layers[-1])
    for config in configs:  # every (sub)config carrying the attribute, as set_attn_implementation does
        config._attn_implementation = name
    model._prefixtune_installed = record


def _number_slots(model: nn.Module) -> None:
    """An encoder-decoder: one slot number per attention module, encoder, decoder, cross (`core.hf.seq2seq`)."""
    for idx, (_, _, sub) in enumerate(attention_slots(model)):
        sub._prefixtune_layer_idx = idx


def is_installed(model: nn.Module) -> bool:
    """Whether prefix-aware attention is installed on `model`."""
    return (model.config._attn_implementation or "").startswith(PREFIX)


def uninstall(model: nn.Module) -> None:
    """Give the model back exactly what `install` changed: its attention implementation(s), and no
    prefixtune attributes on its modules."""
    record = model.__dict__.pop("_prefixtune_installed", None)
    if record is not None:
        for handle in record.hooks:
            handle.remove()
        for config, implementation in record.implementations:  # top config first: its setter resets sub-configs
            config._attn_implementation = implementation
    elif is_installed(model):  # installed by an older prefixtune: the base implementation is all we know
        for config in _configs(model):
            if hasattr(config, "_attn_implementation"):
                config._attn_implementation = base_implementation(model)
    for module in model.modules():
        module.__dict__.pop("_prefixtune_layer_idx", None)


def _configs(model: nn.Module) -> list[Any]:
    """Every distinct config object of the model's modules, in model.modules() order."""
    seen: dict[int, Any] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and id(config) not in seen:
            seen[id(config)] = config
    return list(seen.values())
