"""Method name -> parametrization class. A new method is a new registered module, not a new branch.

The built-in methods are registered when their module is first imported; `parametrization_class` imports it
on demand, so asking which methods exist (`registered_methods`, used by `PrefixConfig` validation and the CLI's
`--help`) needs neither torch nor transformers. Must not depend on io/, train/, serve/ or cli/.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from prefixtune.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from prefixtune.config import PrefixConfig
    from prefixtune.core.geometry import ModelGeometry
    from prefixtune.parametrizations.base import Parametrization

# Built-in method -> the module whose import registers it (DESIGN.md §1: prefix, kv, prompt).
BUILTIN_MODULES: dict[str, str] = {
    "prefix": "prefixtune.parametrizations.prefix",
    "kv": "prefixtune.parametrizations.kv",
    "prompt": "prefixtune.parametrizations.prompt",
}

_REGISTRY: dict[str, type[Parametrization]] = {}


def register(cls: type[Parametrization]) -> type[Parametrization]:
    """Class decorator: make `cls` the parametrization of `cls.method`.

    Raises:
        ConfigError: another class is already registered under that name.
    """
    existing = _REGISTRY.get(cls.method)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ConfigError(f"method {cls.method!r} is already registered by {existing.__module__}.{existing.__name__}")
    _REGISTRY[cls.method] = cls
    return cls


def unregister(method: str) -> None:
    """Forget a method registered at run time (built-in methods come back on their next lookup)."""
    _REGISTRY.pop(method, None)


def registered_methods() -> tuple[str, ...]:
    """Every method name, built-in ones first (imports nothing)."""
    return (*BUILTIN_MODULES, *sorted(set(_REGISTRY) - set(BUILTIN_MODULES)))


def is_registered(method: str) -> bool:
    """Whether `method` names a parametrization (imports nothing)."""
    return isinstance(method, str) and (method in BUILTIN_MODULES or method in _REGISTRY)


def parametrization_class(method: str) -> type[Parametrization]:
    """The class registered for `method` (a built-in one is imported on first use).

    Raises:
        ConfigError: no such method.
    """
    if method not in _REGISTRY and method in BUILTIN_MODULES:
        importlib.import_module(BUILTIN_MODULES[method])
    try:
        return _REGISTRY[method]
    except KeyError:
        raise ConfigError(f"method={method!r} is unknown; registered methods: {list(registered_methods())}") from None


def all_classes() -> list[type[Parametrization]]:
    """Every registered class (built-ins imported)."""
    return [parametrization_class(method) for method in registered_methods()]


def build_parametrization(
    config: PrefixConfig, model: nn.Module, geometry: ModelGeometry, tokenizer: object | None = None
) -> Parametrization:
    """A freshly initialized parametrization for `config` on `model`."""
    return parametrization_class(config.method).create(config, model, geometry, tokenizer)
