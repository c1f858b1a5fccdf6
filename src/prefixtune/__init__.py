"""prefixtune: prefix fine-tuning of frozen Hugging Face language models.

Every adapter (hidden-state prefix, kv prefix, soft prompt) compiles to a per-layer key/value prefix
(`PrefixKV`), and one injection mechanism puts it into the model's attention for training, evaluation,
generation and serving. See DESIGN.md and README.md.

Names that need torch are imported on first use (PEP 562), so `import prefixtune`, the CLI's `--help` and the
HTTP layer start without loading torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prefixtune.config import PrefixConfig
from prefixtune.errors import (
    AdapterFormatError,
    AdapterNotFoundError,
    CheckpointError,
    ConfigError,
    DataError,
    EngineBusyError,
    IncompatibleBaseModelError,
    PrefixtuneError,
    UnsupportedModelError,
)
from prefixtune.version import __version__

if TYPE_CHECKING:
    from prefixtune.core.fingerprint import fingerprint
    from prefixtune.core.prefix_kv import PrefixKV
    from prefixtune.models import load_model
    from prefixtune.prefix_model import PrefixModel, attach, load_adapter, reference_forward

_LAZY = {
    "PrefixKV": "prefixtune.core.prefix_kv",
    "PrefixModel": "prefixtune.prefix_model",
    "attach": "prefixtune.prefix_model",
    "load_adapter": "prefixtune.prefix_model",
    "reference_forward": "prefixtune.prefix_model",
    "fingerprint": "prefixtune.core.fingerprint",
    "load_model": "prefixtune.models",
}

__all__ = [
    "AdapterFormatError",
    "AdapterNotFoundError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EngineBusyError",
    "IncompatibleBaseModelError",
    "PrefixConfig",
    "PrefixKV",
    "PrefixModel",
    "PrefixtuneError",
    "UnsupportedModelError",
    "__version__",
    "attach",
    "fingerprint",
    "load_adapter",
    "load_model",
    "reference_forward",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prefixtune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
