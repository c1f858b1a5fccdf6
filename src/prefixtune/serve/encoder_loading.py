"""Loading an encoder to serve: with a sequence-classification head, and whether that head is trained.

One job: `prefixtune serve --model <encoder>` (a built-in name such as all-minilm-l6-v2, or a BERT / RoBERTa /
ModernBERT directory) loads `...ForSequenceClassification` with the directory's labels (`id2label`). A
directory saved with such a head (its config's `architectures`) classifies as the bare model; a bare encoder
gets a new, random head of the config's `num_labels` (2 unless stated), which only serves to run adapters that
bring their own head (`train_head`) of that many classes: the bare model then refuses to classify.
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from prefixtune.encoder_models import encoder_directory, load_encoder
from prefixtune.errors import ConfigError

_SEQUENCE_HEAD = "ForSequenceClassification"


def is_encoder(name_or_path: str) -> bool:
    """Whether `--model` names an encoder prefixtune supports."""
    return encoder_directory(name_or_path) is not None


def load_served_encoder(name_or_path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, bool]:
    """The encoder with a sequence-classification head and its labels, its tokenizer (right padding), and
    whether the head was in the checkpoint (trained) rather than new.

    Raises:
        ConfigError: not an encoder.
    """
    directory = encoder_directory(name_or_path)
    config = AutoConfig.from_pretrained(directory)
    labels = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]
    model, tokenizer = load_encoder(name_or_path, head="sequence", labels=labels)
    return model, tokenizer, any(a.endswith(_SEQUENCE_HEAD) for a in config.architectures or ())


def is_sequence_classifier(model: PreTrainedModel) -> bool:
    """Whether `model` is a `...ForSequenceClassification` (a model built in memory: its head counts as trained)."""
    return type(model).__name__.endswith(_SEQUENCE_HEAD)


def check_encoder_engine(engine: str, model: str) -> None:
    """Raise ConfigError unless `engine` serves encoders (only the built-in one does; vLLM's is generative)."""
    if engine != "prefixtune":
        raise ConfigError(
            f"--engine {engine} does not serve encoders, and {model!r} is an encoder: serve it with --engine "
            "prefixtune (the built-in engine answers /v1/classify)"
        )
