"""The `Parametrization` base: trainable parameters + `compile(model) -> PrefixKV`.

A parametrization owns its parameters (an `nn.Module`, so `.to()` and optimizers work), knows how to compile
them through the frozen model, and how to save itself without training-only parts (the reparametrization MLP
is folded into the tensors it produces). It must not depend on io/, train/ or serve/.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from prefixtune.config import PrefixConfig
from prefixtune.core.hf.geometry import ModelGeometry
from prefixtune.core.prefix_kv import PrefixKV


class Parametrization(nn.Module):
    """Base class of the trainable adapter forms."""

    method: ClassVar[str]

    def __init__(self, config: PrefixConfig, geometry: ModelGeometry) -> None:
        super().__init__()
        self.config = config
        self.geometry = geometry

    @classmethod
    def create(
        cls, config: PrefixConfig, model: nn.Module, geometry: ModelGeometry, tokenizer: object | None
    ) -> Parametrization:
        """A new, initialized instance (see `config.init`)."""
        raise NotImplementedError

    def compile(self, model: nn.Module, fingerprint: dict | None = None) -> PrefixKV:
        """Per-layer keys/values of this adapter on the frozen `model`; differentiable."""
        raise NotImplementedError

    def folded_state(self) -> dict[str, torch.Tensor]:
        """The tensors to save: the effective parameters, reparametrization folded away."""
        raise NotImplementedError

    @classmethod
    def expected_shapes(cls, config: PrefixConfig, geometry: ModelGeometry) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every tensor `folded_state` returns (checked when loading)."""
        raise NotImplementedError

    @classmethod
    def from_folded(
        cls, config: PrefixConfig, geometry: ModelGeometry, tensors: dict[str, torch.Tensor]
    ) -> Parametrization:
        """Rebuild from saved folded tensors (trained directly from then on; no reparametrization)."""
        raise NotImplementedError

    @property
    def num_virtual_tokens(self) -> int:
        return self.config.num_virtual_tokens

    def _kv(self, keys, values, fingerprint: dict | None) -> PrefixKV:
        return PrefixKV(
            keys=tuple(keys),
            values=tuple(values),
            method=self.method,
            position_convention=self.config.position_convention,
            fingerprint=fingerprint,
        )
