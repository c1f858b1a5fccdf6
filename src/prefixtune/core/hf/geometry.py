"""Reading `ModelGeometry` off a model by running it, not from configs."""

from __future__ import annotations

import torch
from torch import nn

from prefixtune.core.capture import capture_kv
from prefixtune.core.geometry import ModelGeometry
from prefixtune.core.hf.layers import hidden_size, num_layers
from prefixtune.core.hf.seq2seq import is_encoder_decoder, slot_sites

__all__ = ["ModelGeometry", "read_geometry"]


def read_geometry(model: nn.Module) -> ModelGeometry:
    """Run the model on one token and read every layer's key/value shape."""
    device = model.get_input_embeddings().weight.device
    with torch.no_grad():
        keys, _ = capture_kv(model, input_ids=torch.zeros(1, 1, dtype=torch.long, device=device))
    kv_shapes = tuple((int(k.shape[1]), int(k.shape[3])) for k in keys)
    if is_encoder_decoder(model):  # one entry per attention slot, each with its site
        return ModelGeometry(len(kv_shapes), hidden_size(model), kv_shapes, sites=slot_sites(model))
    return ModelGeometry(num_layers=num_layers(model), hidden_size=hidden_size(model), kv_shapes=kv_shapes)
