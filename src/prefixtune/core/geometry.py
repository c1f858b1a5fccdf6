"""`ModelGeometry`: the shapes an adapter must match (a plain value; `core.hf.geometry` reads it off a model).

Depends on nothing: io/, diagnostics/ and the parametrizations pass it around without touching transformers.
"""

from __future__ import annotations

from dataclasses import dataclass


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
