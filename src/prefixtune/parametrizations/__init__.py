"""The trainable forms of an adapter. Each compiles to a `PrefixKV` (DESIGN.md §1).

Importing this package registers the built-in methods ("prefix", "kv", "prompt").
"""

from prefixtune.parametrizations import kv, prefix, prompt  # noqa: F401  (registration)
from prefixtune.parametrizations.base import Parametrization
from prefixtune.parametrizations.registry import build_parametrization, parametrization_class

__all__ = ["Parametrization", "build_parametrization", "parametrization_class"]
