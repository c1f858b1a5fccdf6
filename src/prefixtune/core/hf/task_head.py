"""An encoder model's task head, run on given encoder outputs with given weights.

The task head of `...ForSequenceClassification` / `...ForTokenClassification` is every weight outside the bare
encoder (`base_model`): BERT's `classifier` (its pooler belongs to the encoder), RoBERTa's `classifier.dense`
and `classifier.out_proj`, ModernBERT's `head` and `classifier`. `run_head` runs the model's own forward with
the bare encoder standing in for one call, returning the given outputs, and with the head's weights replaced
by an adapter's (`torch.func.functional_call`), so each family's pooling, dropout and loss apply as in a
normal forward, and rows of one batch can go through different adapters' heads.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

_LOCK = threading.Lock()  # the bare encoder's forward is swapped for one call; one swap at a time


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the task head's parameters (none for a bare encoder)."""
    base = model.base_model
    if base is model:
        return []
    inside = {id(p) for p in base.parameters()}
    return [name for name, p in model.named_parameters() if id(p) not in inside]


def encoder_output(model: nn.Module, hidden: torch.Tensor) -> BaseModelOutputWithPooling:
    """What the bare encoder returns for final states `hidden` (B, n, d): the states and, where the encoder
    has one (BERT), its pooler's output."""
    pooler = getattr(model.base_model, "pooler", None)
    return BaseModelOutputWithPooling(
        last_hidden_state=hidden, pooler_output=None if pooler is None else pooler(hidden)
    )


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The attention-mask-weighted mean over positions: (B, n, d), (B, n) -> (B, d) (sentence-transformers'
    mean pooling; padded positions count for nothing, a row without real tokens gives zeros)."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, n, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def run_head(
    model: nn.Module, encoded: Any, params: dict[str, torch.Tensor] | None = None, **forward_kwargs: Any
) -> Any:
    """The model's output for the bare encoder's output `encoded`, through its head with `params`.

    Args:
        model: an encoder with a task head (for a bare encoder, `encoded` is returned as it is).
        encoded: the bare encoder's output (`last_hidden_state` (B, n, d), `pooler_output` where it has one).
        params: head parameter name -> tensor to use instead of the model's own (None: the model's).
        **forward_kwargs: the model's forward arguments (`input_ids` or `attention_mask` for shapes and
            pooling, `labels` for the loss).

    Returns:
        The model's output (`.logits`, `.loss` with labels).
    """
    base = model.base_model
    if base is model:
        return encoded

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        return encoded

    with _LOCK:
        previous = base.__dict__.get("forward")
        base.forward = stand_in  # an instance attribute: the class's forward is untouched
        try:
            if params:
                return torch.func.functional_call(model, params, (), forward_kwargs, strict=False)
            return model(**forward_kwargs)
        finally:
            if previous is None:
                del base.forward
            else:
                base.forward = previous
