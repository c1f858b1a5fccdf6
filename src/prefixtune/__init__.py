"""prefixtune: prefix fine-tuning of frozen Hugging Face language models.

Every adapter (hidden-state prefix, kv prefix, soft prompt) compiles to a per-layer key/value prefix
(`PrefixKV`), and one injection mechanism puts it into the model's attention for training, evaluation,
generation and serving. See DESIGN.md and README.md.
"""

from __future__ import annotations

import torch

from prefixtune.config import PrefixConfig
from prefixtune.core.fingerprint import fingerprint
from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.core.reference import reference_logits
from prefixtune.errors import (
    AdapterFormatError,
    AdapterNotFoundError,
    ConfigError,
    DataError,
    EngineBusyError,
    IncompatibleBaseModelError,
    PrefixtuneError,
    UnsupportedModelError,
)
from prefixtune.prefix_model import PrefixModel, attach, load_adapter
from prefixtune.version import __version__

__all__ = [
    "AdapterFormatError",
    "AdapterNotFoundError",
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
    "reference_forward",
]


def reference_forward(
    pm: PrefixModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    adapter_name: str | None = None,
) -> torch.Tensor:
    """Logits (B, n, V) of adapter `adapter_name` computed by the literal reference path (methods prefix, prompt).

    The executable specification of DESIGN.md §1: tests prove the fast path equal to it.
    """
    config = pm.adapter_config(adapter_name)
    adapter = pm.adapters[adapter_name or pm.active_adapter]
    if config.method == "prefix":
        return reference_logits(
            pm.base_model, input_ids, attention_mask, layer_prefixes=pm.prefix_states(adapter_name)
        )
    if config.method == "prompt":
        return reference_logits(pm.base_model, input_ids, attention_mask, prompt=adapter.prompt)
    raise ConfigError(f"the reference path covers methods 'prefix' and 'prompt', not {config.method!r}")
