"""Activation (gradient) checkpointing on a transformers model, across the method's rename."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def suspended(model: nn.Module) -> Iterator[None]:
    """Checkpointing off for a block (a compile's capture run over m positions gains nothing from it, and
    transformers < 5.20 recomputes a layer's whole `__call__`, pre-hooks included, outside the capture's
    context, so the recomputation would differ from the forward)."""
    layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]
    for layer in layers:
        layer.gradient_checkpointing = False
    try:
        yield
    finally:
        for layer in layers:
            layer.gradient_checkpointing = True
