"""Logits from final hidden states through the model's own head, whatever its family does there.

A family may do more than multiply by the output embeddings: Cohere multiplies by `logit_scale`, Gemma 2 and
3 soft-cap (`cap * tanh(logits / cap)`), Granite divides by `logits_scaling`. Instead of a table of such
rules, `output_logits` runs the causal LM's own forward with its decoder standing in for one call, returning
the given states, so every family's head (and any new family's) applies exactly as in a normal forward.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

_LOCK = threading.Lock()  # the decoder's forward is swapped for one call; one swap at a time


def output_logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The logits the model's forward would give for these final hidden states.

    Args:
        model: a causal LM (`PreTrainedModel` with a `base_model` decoder).
        hidden: (..., T, d) final hidden states, as `output_hidden_states=True` gives them last.

    Returns:
        (..., T, V) logits, with the family's scaling or capping applied.
    """
    states = hidden.reshape(-1, *hidden.shape[-2:])  # (B, T, d)
    decoder = model.base_model

    def stand_in(*args: Any, **kwargs: Any) -> BaseModelOutputWithPastAndCrossAttentions:
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=states)

    ids = torch.zeros(states.shape[:2], dtype=torch.long, device=states.device)  # (B, T): shapes only
    with _LOCK:
        previous = decoder.__dict__.get("forward")  # an instance forward someone (accelerate) set, if any
        decoder.forward = stand_in  # an instance attribute: the class's forward is untouched
        try:
            logits = model(input_ids=ids, use_cache=False, logits_to_keep=0).logits  # (B, T, V)
        finally:
            if previous is None:
                del decoder.forward
            else:
                decoder.forward = previous
    return logits.reshape(*hidden.shape[:-1], logits.shape[-1])
