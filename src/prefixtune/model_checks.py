"""What an adapter configuration asks of its base model, checked before anything is built.

`PrefixConfig` validates itself without a model; these are the rules that depend on the model's family: the
"unshifted" position convention needs learned absolute positions (BERT, RoBERTa), and `train_head` needs an
encoder with a task head. Depends on config, core and errors only.
"""

from __future__ import annotations

from torch import nn

from prefixtune.config import PrefixConfig
from prefixtune.core import has_absolute_positions, has_bidirectional_attention, head_parameter_names
from prefixtune.errors import ConfigError


def model_config_problems(model: nn.Module, config: PrefixConfig) -> list[str]:
    """Every reason `model` cannot run an adapter configured as `config` (empty when it can)."""
    out = []
    if config.position_convention == "unshifted" and not has_absolute_positions(model):
        out.append(
            f"position_convention='unshifted' needs an encoder with learned absolute positions (BERT, RoBERTa); "
            f"{type(model).__name__} numbers real tokens after the prefix: use 'shifted'"
        )
    if config.train_head and not (has_bidirectional_attention(model) and head_parameter_names(model)):
        out.append(
            f"train_head=True needs an encoder with a task head (...ForSequenceClassification or "
            f"...ForTokenClassification); {type(model).__name__} has none: load the model with such a class, "
            "or set train_head=False"
        )
    return out


def head_names_for(model: nn.Module) -> list[str]:
    """The task head's parameter names, which an adapter with `train_head` copies.

    Raises:
        ConfigError: the model has no task head.
    """
    names = head_parameter_names(model) if has_bidirectional_attention(model) else []
    if not names:
        raise ConfigError(f"{type(model).__name__} has no task head to train (train_head=True)")
    return names
