"""What an adapter configuration asks of its base model, checked before anything is built.

`PrefixConfig` validates itself without a model; these are the rules that depend on the model's family: the
"unshifted" position convention needs learned absolute positions (BERT, RoBERTa), and `train_head` needs an
encoder with a task head (`head_pooling="mean"`: a sequence-classification one). Depends on config, core,
errors and parametrizations only.
"""

from __future__ import annotations

from torch import nn

from prefixtune.config import PrefixConfig
from prefixtune.core import (
    has_absolute_positions,
    has_bidirectional_attention,
    head_parameter_names,
    is_encoder_decoder,
)
from prefixtune.errors import ConfigError
from prefixtune.parametrizations.registry import parametrization_class
from prefixtune.parametrizations.task_head import mean_head_shapes


def model_config_problems(model: nn.Module, config: PrefixConfig) -> list[str]:
    """Every reason `model` cannot run an adapter configured as `config` (empty when it can)."""
    out = []
    if is_encoder_decoder(model):
        refusal = parametrization_class(config.method).encoder_decoder_problem
        if refusal is not None:
            return [refusal]
        # T5 and BART: real tokens keep their positions and prefix keys have none (`core.seq2seq_batch`).
        if config.position_convention != "unshifted":
            out.append(
                f"position_convention={config.position_convention!r} does not apply to encoder-decoders "
                f"({type(model).__name__}): their real tokens keep their own positions ('unshifted')"
            )
    elif config.position_convention == "unshifted" and not has_absolute_positions(model):
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
    elif config.head_pooling == "mean" and not type(model).__name__.endswith("ForSequenceClassification"):
        out.append(
            f"head_pooling='mean' is a sequence-classification head (one mean over the real tokens per input); "
            f"{type(model).__name__} is not a ...ForSequenceClassification: use head_pooling='model' "
            "(token classification reads every token)"
        )
    return out


def expected_head_shapes(model: nn.Module, config: PrefixConfig) -> dict[str, tuple[int, ...]] | None:
    """The exact tensors a mean-pooling head (`head_pooling="mean"`) must save; None for a copy of the
    model's head, whose tensors are checked against the model's own head parameters."""
    if config.head_pooling != "mean":
        return None
    return mean_head_shapes(int(model.config.hidden_size), int(model.config.num_labels))


def config_for_model(model: nn.Module, config: PrefixConfig) -> PrefixConfig:
    """`config` as this model runs it: an encoder-decoder has one position convention, 'unshifted', so the
    default 'shifted' is recorded as that; init 'auto' with no training data at hand (training resolves it
    first, `train.task_init`) is 'vocab'. The adapter files then say what was run.

    Raises:
        ConfigError: init 'task', which needs training examples that only training has.
    """
    if config.init == "task":
        raise ConfigError(
            "init='task' starts the adapter from training examples, which only training has "
            "(`prefixtune train`, run_training); to attach one yourself pass init='text' with "
            "init_text=prefixtune.train.task_init.task_init_text(examples, fmt)"
        )
    if config.init == "auto":
        config = config.replace(init="vocab")
    method = parametrization_class(config.method)
    if is_encoder_decoder(model) and config.position_convention == "shifted" and method.encoder_decoder_problem is None:
        return config.replace(position_convention="unshifted")
    return config


def head_names_for(model: nn.Module) -> list[str]:
    """The task head's parameter names, which an adapter with `train_head` copies.

    Raises:
        ConfigError: the model has no task head.
    """
    names = head_parameter_names(model) if has_bidirectional_attention(model) else []
    if not names:
        raise ConfigError(f"{type(model).__name__} has no task head to train (train_head=True)")
    return names
