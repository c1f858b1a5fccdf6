"""The trainable forms of an adapter. Each compiles to a `PrefixKV` (DESIGN.md §1).

The built-in methods ("prefix", "kv", "prompt") are registered on first lookup (`parametrization_class`); a
new method is a `Parametrization` subclass decorated with `register`. Names are imported on first use
(PEP 562), so the registry's names are known without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prefixtune.parametrizations.registry import (
    all_classes,
    build_parametrization,
    is_registered,
    parametrization_class,
    register,
    registered_methods,
    unregister,
)

if TYPE_CHECKING:
    from prefixtune.parametrizations.base import Observation, Parametrization, PeftTensors

_LAZY = {name: "prefixtune.parametrizations.base" for name in ("Observation", "Parametrization", "PeftTensors")}

__all__ = [
    "Observation",
    "Parametrization",
    "PeftTensors",
    "all_classes",
    "build_parametrization",
    "is_registered",
    "parametrization_class",
    "register",
    "registered_methods",
    "unregister",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prefixtune.parametrizations' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
