"""Finding the decoder layers and embeddings of a Hugging Face causal LM, without per-architecture code."""

from __future__ import annotations

import torch
from torch import nn

from prefixtune.errors import UnsupportedModelError


def num_layers(model: nn.Module) -> int:
    """The number of decoder layers, from the config."""
    config = model.config
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise UnsupportedModelError(f"cannot read the number of layers from {type(config).__name__}")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder layers: the one whose length is the config's layer count.

    Raises:
        UnsupportedModelError: when no such list exists or it is ambiguous.
    """
    n = num_layers(model)
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if len(candidates) != 1:
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected exactly one list of {n} decoder layers, found {len(candidates)}; "
            "prefixtune supports decoder-only causal LMs from transformers"
        )
    return candidates[0]


def hidden_size(model: nn.Module) -> int:
    """d, the width of the residual stream."""
    return int(input_embeddings(model).weight.shape[1])


def input_embeddings(model: nn.Module) -> nn.Embedding:
    """The token embedding module."""
    emb = model.get_input_embeddings()
    if emb is None or not hasattr(emb, "weight"):
        raise UnsupportedModelError(f"{type(model).__name__} has no token embedding matrix")
    return emb


def embedding_std(model: nn.Module) -> float:
    """Standard deviation of the token embedding matrix (scale for random initializations)."""
    with torch.no_grad():
        return float(input_embeddings(model).weight.float().std())


def max_positions(model: nn.Module) -> int | None:
    """The model's position limit (learned position tables or the trained RoPE range), None if not stated."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def num_attention_heads(model: nn.Module) -> int | None:
    """The number of query heads, from the config (GPT-2 calls it `n_head`), None if not stated."""
    config = model.config
    for name in ("num_attention_heads", "n_head"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def tied_weight_names(model: nn.Module) -> set[str]:
    """State-dict keys this model fills from another parameter (`tie_weights`), so a copy may lack them.

    Only the ties the model's config turns on: an untied output head (`tie_word_embeddings=False`) is a
    weight of its own, and a copy without it would leave it random.
    """
    ties = getattr(model, "all_tied_weights_keys", None)  # transformers >= 5: {target: source}, as configured
    if isinstance(ties, dict):
        return set(ties)
    if not getattr(model.config, "tie_word_embeddings", False):
        return set()
    return set(getattr(model, "_tied_weights_keys", None) or [])
