"""Method name -> parametrization class. A new method is a new registered module, not a new branch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefixtune.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from prefixtune.config import PrefixConfig
    from prefixtune.core.hf.geometry import ModelGeometry
    from prefixtune.parametrizations.base import Parametrization

_REGISTRY: dict[str, type[Parametrization]] = {}


def register(cls: type[Parametrization]) -> type[Parametrization]:
    """Class decorator: make `cls` the parametrization of `cls.method`."""
    _REGISTRY[cls.method] = cls
    return cls


def parametrization_class(method: str) -> type[Parametrization]:
    """The class registered for `method`."""
    try:
        return _REGISTRY[method]
    except KeyError:
        raise ConfigError(f"method={method!r} is unknown; registered methods: {sorted(_REGISTRY)}") from None


def build_parametrization(
    config: PrefixConfig, model: nn.Module, geometry: ModelGeometry, tokenizer: object | None = None
) -> Parametrization:
    """A freshly initialized parametrization for `config` on `model`."""
    return parametrization_class(config.method).create(config, model, geometry, tokenizer)
