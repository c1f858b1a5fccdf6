"""`ModelFacts`: what the checks need to know about the base model, read once per `doctor` run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from prefixtune.core import ModelGeometry, encoder_family, max_positions, model_fingerprint, read_geometry


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """The base model and its shapes, fingerprint and position limit.

    Attributes:
        model: the frozen transformers model (used to recompute prefix states).
        geometry: layers, hidden size and per-layer key/value shapes.
        fingerprint: as `prefixtune.fingerprint` computes it.
        max_positions: the largest number of positions the model can number, or None if it declares none.
        family: the encoder family ("bert", "roberta", "modernbert"), or "decoder".
    """

    model: nn.Module
    geometry: ModelGeometry
    fingerprint: dict[str, Any]
    max_positions: int | None
    family: str = "decoder"

    @classmethod
    def read(cls, model: nn.Module) -> ModelFacts:
        """Read the facts off `model` (runs it once on one token)."""
        geometry = read_geometry(model)  # first: refuses unsupported models with a clear error
        family = encoder_family(model) or "decoder"
        return cls(model, geometry, model_fingerprint(model), max_positions(model), family)
