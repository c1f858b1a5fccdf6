"""Encoder families (bidirectional attention): which are supported, and the parts their literal path runs.

Supported, each tested against the literal path (`core.reference_encoder`): BERT and RoBERTa (learned
absolute positions added at the embeddings, post-norm layers under `encoder.layer`; RoBERTa numbers real
tokens from `padding_idx + 1`) and ModernBERT (rotary positions, fused Wqkv, pre-norm layers under `layers`,
alternating global and sliding-window attention). Any other model whose attention is bidirectional is refused
with `UnsupportedModelError` rather than run unchecked (DeBERTa-v2, for one, computes its disentangled
attention itself instead of through transformers' AttentionInterface, so no prefix could reach it).
Encoder-decoders (`is_encoder_decoder`) are not encoders here.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from prefixtune.errors import UnsupportedModelError

# config.model_type -> family name; the families this module's parts and the tests cover.
ENCODER_FAMILIES: dict[str, str] = {"bert": "bert", "roberta": "roberta", "modernbert": "modernbert"}


@dataclass(frozen=True, slots=True)
class EncoderParts:
    """Module access for a layer-by-layer run of an encoder.

    Attributes:
        family: "bert", "roberta" or "modernbert".
        base: the bare encoder (`BertModel`, ...), the model's `base_model`.
        layers: its layer list.
        embed: (input_ids or None, inputs_embeds or None, position_ids) -> H^0, the embedding module's output.
        rotary: (h, position_ids, layer) -> that layer's rotary (cos, sin), or None (absolute positions).
        sliding_window: (layer) -> the half-width of a layer's sliding window (|q - k| <= w), or None.
        final_norm: applied after the last layer (identity for post-norm families).
        position_offset: the position of the first real token without a prefix (RoBERTa: padding_idx + 1).
        has_absolute_positions: positions enter once, as a learned table at the embeddings.
    """

    family: str
    base: nn.Module
    layers: nn.ModuleList
    embed: Callable[[torch.Tensor | None, torch.Tensor | None, torch.Tensor], torch.Tensor]
    rotary: Callable[[torch.Tensor, torch.Tensor, int], object]
    sliding_window: Callable[[int], int | None]
    final_norm: nn.Module
    position_offset: int
    has_absolute_positions: bool


# model -> whether its attention is bidirectional (asked on every forward; a model's layers do not change).
_BIDIRECTIONAL: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def has_bidirectional_attention(model: nn.Module) -> bool:
    """Whether `model` is an encoder: its self-attention modules say `is_causal = False` (encoder-decoders
    excluded: their decoders are causal, and they are another family of their own)."""
    known = _BIDIRECTIONAL.get(model)
    if known is not None:
        return known
    flags = [m.is_causal for m in model.modules() if "Attention" in type(m).__name__ and hasattr(m, "is_causal")]
    answer = bool(flags) and not any(flags) and not getattr(model.config, "is_encoder_decoder", False)
    _BIDIRECTIONAL[model] = answer
    return answer


def encoder_family(model: nn.Module) -> str | None:
    """The supported encoder family of `model`, or None for a model that is not an encoder.

    Raises:
        UnsupportedModelError: an encoder of a family prefixtune does not support.
    """
    if not has_bidirectional_attention(model):
        return None
    model_type = getattr(model.config, "model_type", None)
    family = ENCODER_FAMILIES.get(model_type)
    if family is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} (model_type {model_type!r}) is an encoder of a family prefixtune does not "
            f"support; supported encoders: {', '.join(sorted(ENCODER_FAMILIES))} (AutoModel, "
            "...ForSequenceClassification, ...ForTokenClassification)"
        )
    return family


def position_offset(model: nn.Module) -> int:
    """Where an encoder numbers its first real token: RoBERTa-style embeddings count from padding_idx + 1
    (`create_position_ids_from_input_ids`), BERT and ModernBERT from 0."""
    embeddings = getattr(model.base_model, "embeddings", None)
    if hasattr(embeddings, "create_position_ids_from_input_ids") and isinstance(embeddings.padding_idx, int):
        return int(embeddings.padding_idx) + 1
    return 0


def encoder_parts(model: nn.Module) -> EncoderParts:
    """The parts of a supported encoder that its literal path runs one by one.

    Raises:
        UnsupportedModelError: not a supported encoder.
    """
    family = encoder_family(model)
    if family is None:
        raise UnsupportedModelError(f"{type(model).__name__} is not an encoder (its attention is causal)")
    base = model.base_model
    if family == "modernbert":
        config = base.config

        def rotary(h: torch.Tensor, pos: torch.Tensor, layer: int) -> object:
            return base.rotary_emb(h, pos, base.layers[layer].attention_type)

        def window(layer: int) -> int | None:
            return config.sliding_window if base.layers[layer].attention_type == "sliding_attention" else None

        def embed(ids, embeds, pos):
            return base.embeddings(input_ids=ids, inputs_embeds=embeds)

        return EncoderParts(family, base, base.layers, embed, rotary, window, base.final_norm, 0, False)

    def embed_absolute(ids, embeds, pos):
        return base.embeddings(input_ids=ids, inputs_embeds=embeds, position_ids=pos)

    return EncoderParts(
        family,
        base,
        base.encoder.layer,
        embed_absolute,
        lambda h, pos, layer: None,
        lambda layer: None,
        nn.Identity(),
        position_offset(model),
        True,
    )


def encoder_position_ids(
    model: nn.Module, attention_mask: torch.Tensor, shifts: torch.Tensor, offset: int | None = None
) -> torch.Tensor:
    """Position ids of an encoder's real tokens: offset + shift_row + (real tokens before this one).

    Args:
        attention_mask: (B, T), 1 = real token. shifts: (B,) long, the row's shift (m for "shifted", else 0).
        offset: the family's first position (default: `position_offset(model)`).

    Returns:
        (B, T) long.
    """
    start = position_offset(model) if offset is None else offset
    counts = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
    return counts + shifts.to(counts.device).long()[:, None] + start


def encoder_model_types() -> tuple[str, ...]:
    """The `config.model_type` values of the supported encoder families."""
    return tuple(ENCODER_FAMILIES)


def has_absolute_positions(model: nn.Module) -> bool:
    """Whether `model` is a supported encoder whose positions are a learned table added at the embeddings."""
    return encoder_family(model) in ("bert", "roberta")
