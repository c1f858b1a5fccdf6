"""Encoder-decoder models (T5, BART): their attention sites, found by capability, not by family name.

An encoder-decoder has three kinds of attention, each a *site* that an adapter may give a prefix (issue 12,
after Li & Liang's summarization setting): the encoder's self-attention, the decoder's self-attention and the
decoder's cross-attention over the encoder outputs. prefixtune numbers every attention module of the model
once, as one flat list of *slots* in the order encoder layers, decoder layers, cross-attention layers; a
compiled prefix holds m keys/values per slot of the sites it uses.

Supported: models whose config says `is_encoder_decoder`, whose encoder and decoder each hold one list of
layers, whose encoder layers have one attention module and decoder layers two (self, then cross), and whose
modeling file routes attention through transformers' AttentionInterface (it defines
`eager_attention_forward`). Anything else is refused with `UnsupportedModelError`.
"""

from __future__ import annotations

import sys

from torch import nn

from prefixtune.config import SITES
from prefixtune.errors import UnsupportedModelError

__all__ = ["SELF_SITES", "SITES", "attention_slots", "is_encoder_decoder", "slot_sites"]

SELF_SITES: tuple[str, ...] = ("encoder", "decoder")  # sites where a hidden-state prefix P^l enters a layer


def is_encoder_decoder(model: nn.Module) -> bool:
    """Whether `model` is an encoder-decoder (T5, BART), by its config."""
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def _stack_layers(stack: nn.Module, what: str, model: nn.Module) -> nn.ModuleList:
    """The one ModuleList of layers directly under an encoder or decoder stack (`block` in T5, `layers` in BART)."""
    lists = [m for m in stack.children() if isinstance(m, nn.ModuleList)]
    if len(lists) != 1:
        raise UnsupportedModelError(
            f"{type(model).__name__}: its {what} has {len(lists)} lists of layers, expected one; prefixtune "
            "supports encoder-decoders laid out as T5 and BART are"
        )
    return lists[0]


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layers."""
    return _stack_layers(model.get_encoder(), "encoder", model)


def decoder_stack(model: nn.Module) -> nn.Module:
    """The decoder stack (T5Stack, BartDecoder)."""
    return model.get_decoder()


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder's layers."""
    return _stack_layers(decoder_stack(model), "decoder", model)


def _attention_modules(layer: nn.Module) -> list[nn.Module]:
    """The innermost attention modules of a layer, in registration order (T5's wrappers are skipped)."""
    named = [m for m in layer.modules() if "Attention" in type(m).__name__]
    return [m for m in named if not any(o is not m and "Attention" in type(o).__name__ for o in m.modules())]


def attention_slots(model: nn.Module) -> list[tuple[str, int, nn.Module]]:
    """Every attention module as (site, layer within the site, module), in slot order.

    Raises:
        UnsupportedModelError: a layout other than T5's and BART's, or attention that bypasses transformers'
            AttentionInterface.
    """
    enc, dec = encoder_layers(model), decoder_layers(model)
    selfs, cross = [], []
    encoder = [_one_kind(model, layer, 1, "encoder")[0] for layer in enc]
    for layer in dec:
        s, c = _one_kind(model, layer, 2, "decoder")
        selfs.append(s)
        cross.append(c)
    slots = [("encoder", i, m) for i, m in enumerate(encoder)]
    slots += [("decoder", i, m) for i, m in enumerate(selfs)]
    slots += [("cross", i, m) for i, m in enumerate(cross)]
    for _, _, module in slots:
        if getattr(sys.modules[type(module).__module__], "eager_attention_forward", None) is None:
            raise UnsupportedModelError(
                f"{type(model).__name__}: its attention ({type(module).__name__}) does not go through "
                "transformers' AttentionInterface, which prefixtune hooks; T5 and BART do"
            )
    return slots


def _one_kind(model: nn.Module, layer: nn.Module, expected: int, what: str) -> list[nn.Module]:
    found = _attention_modules(layer)
    if len(found) != expected:
        raise UnsupportedModelError(
            f"{type(model).__name__}: a {what} layer holds {len(found)} attention modules, expected {expected} "
            "(encoder: self-attention; decoder: self- then cross-attention, as in T5 and BART)"
        )
    return found


def slot_sites(model: nn.Module) -> tuple[str, ...]:
    """The site of every slot, in slot order: ("encoder",) * L_enc + ("decoder",) * L_dec + ("cross",) * L_dec."""
    return tuple(site for site, _, _ in attention_slots(model))


def input_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose input a hidden-state prefix replaces, in slot order: encoder layers, then decoder layers."""
    return [*encoder_layers(model), *decoder_layers(model)]
