"""The parts of a decoder the reference path runs one by one, found by capability, not by family name.

A model has either learned absolute position embeddings added to the token embeddings (`wpe`: GPT-2) or a
rotary embedding handed to every layer (`rotary_emb`: Llama, Qwen2/3, Mistral, Cohere); the final norm is
`ln_f` or `norm`. Anything else (ALiBi, for one) is refused rather than run wrongly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from prefixtune.errors import UnsupportedModelError


@dataclass(frozen=True, slots=True)
class DecoderParts:
    """Module access for a layer-by-layer run of the decoder."""

    layers: nn.ModuleList
    embed_positions: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (h, position_ids) -> h
    rotary: Callable[[torch.Tensor, torch.Tensor], object]  # (h, position_ids) -> position_embeddings or None
    final_norm: nn.Module


def has_learned_positions(decoder: nn.Module) -> bool:
    """Whether positions enter as a learned table added to the token embeddings (GPT-2's `wpe`)."""
    return isinstance(getattr(decoder, "wpe", None), nn.Embedding) and hasattr(decoder, "h")


def has_rotary_positions(decoder: nn.Module) -> bool:
    """Whether positions enter as a rotary embedding every layer receives (the Llama family's `rotary_emb`)."""
    return getattr(decoder, "rotary_emb", None) is not None and hasattr(decoder, "layers")


def decoder_parts(model: nn.Module) -> DecoderParts:
    """The layers, position handling and final norm of a causal LM's decoder.

    Raises:
        UnsupportedModelError: positions that are neither learned-absolute nor rotary, or no final norm.
    """
    decoder = getattr(model, "transformer", None) or getattr(model, "model", None)
    norm = getattr(decoder, "ln_f", None) or getattr(decoder, "norm", None)
    if decoder is not None and norm is not None and has_learned_positions(decoder):
        return DecoderParts(decoder.h, lambda h, pos: h + decoder.wpe(pos), lambda h, pos: None, norm)
    if decoder is not None and norm is not None and has_rotary_positions(decoder):
        return DecoderParts(decoder.layers, lambda h, pos: h, decoder.rotary_emb, norm)
    raise UnsupportedModelError(
        f"the reference path supports learned absolute positions (GPT-2) and rotary ones (the Llama family), "
        f"not {type(model).__name__}"
    )
