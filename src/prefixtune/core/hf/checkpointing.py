"""Activation (gradient) checkpointing on a transformers model, across the method's rename."""

from __future__ import annotations

from torch import nn

# Non-reentrant checkpointing passes keyword tensors (our `prefix_batch`) through the recomputation, so the
# prefixes receive their gradients; the reentrant variant would silently drop them.
_KWARGS = {"use_reentrant": False}


def enable(model: nn.Module) -> None:
    """Turn on activation checkpointing (the model must be in train mode for transformers to use it)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=_KWARGS)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=_KWARGS)


def disable(model: nn.Module) -> None:
    """Turn activation checkpointing off."""
    if hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()
