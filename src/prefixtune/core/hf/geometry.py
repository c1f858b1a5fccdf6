"""`ModelGeometry`: the shapes an adapter must match, read off the model by running it, not from configs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prefixtune.core.capture import capture_kv
from prefixtune.core.hf.layers import hidden_size, num_layers


@dataclass(frozen=True, slots=True)
class ModelGeometry:
    """Shapes of a base model as prefixtune sees them.

    Attributes:
        num_layers: L.
        hidden_size: d.
        kv_shapes: per layer, (H_kv, D) of the keys/values its attention consumes.
    """

    num_layers: int
    hidden_size: int
    kv_shapes: tuple[tuple[int, int], ...]

    @property
    def kv_width(self) -> int:
        """H_kv * D of the first layer (the PEFT `kv_width`)."""
        H, D = self.kv_shapes[0]
        return H * D


def read_geometry(model: nn.Module) -> ModelGeometry:
    """Run the model on one token and read every layer's key/value shape."""
    device = model.get_input_embeddings().weight.device
    with torch.no_grad():
        keys, _ = capture_kv(model, input_ids=torch.zeros(1, 1, dtype=torch.long, device=device))
    return ModelGeometry(
        num_layers=num_layers(model),
        hidden_size=hidden_size(model),
        kv_shapes=tuple((int(k.shape[1]), int(k.shape[3])) for k in keys),
    )
