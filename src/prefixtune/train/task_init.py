"""The `task` initialization: start an adapter from the activations of the task's own training examples.

One job: choose the text. For classification it is the shortest training example of each label with its
label word, in label order (a few-shot prompt of the task, which the frozen model already reads as one);
for completion and chat data, the four shortest examples. The adapter's m tokens are its first m tokens,
tiled when shorter (`parametrizations.init`). In bench/quality_suite.py this start scored 5 validation
points above random vocabulary tokens for `kv` on debates-2016 (bench/RESULTS-quality-levers.md), which is
why training uses it by default (init 'auto'). Depends on `config` and `train.formats`; no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefixtune.config import PrefixConfig
from prefixtune.errors import DataError
from prefixtune.train.formats import Example, TaskFormat

GENERATION_EXAMPLES = 4  # a completion task's init text: this many of its shortest training examples


def task_init_text(examples: Sequence[Example], fmt: TaskFormat) -> str:
    """The text whose activations start a `task`-initialized adapter (see the module docstring).

    Raises:
        DataError: no training examples, or a label with none.
    """
    if not examples:
        raise DataError("init='task' needs training examples; the training data is empty")
    if fmt.kind != "classification":
        shortest = sorted(examples, key=lambda e: len(_full_text(e)))[:GENERATION_EXAMPLES]
        return "".join(_full_text(e) + "\n" for e in shortest)
    parts = []
    for label in fmt.labels:
        of_label = [e for e in examples if e.label == label]
        if not of_label:
            raise DataError(
                f"init='task' takes one training example per label, and label {label!r} has none; "
                "add examples of it or pass --init vocab"
            )
        parts.append(_full_text(min(of_label, key=lambda e: len(e.prompt))) + "\n")
    return "".join(parts)


def resolve_init(
    config: PrefixConfig, examples: Sequence[Example], fmt: TaskFormat, *, decoder_only: bool
) -> PrefixConfig:
    """`config` with its init made concrete for training on `examples`: 'task', and 'auto' on a decoder-only
    model, become init 'text' with the task's text (which the adapter files then record). 'auto' on an
    encoder or encoder-decoder stays, to be built as 'vocab' (`model_checks.config_for_model`): the task
    text was measured on decoder-only models only. Other inits are returned as given.
    """
    if config.init == "task" or (config.init == "auto" and decoder_only):
        return config.replace(init="text", init_text=task_init_text(examples, fmt))
    return config


def _full_text(example: Example) -> str:
    """The example as a reader sees it: prompt and target, template and label word included (without the
    end-of-sequence token that training appends to a completion)."""
    if example.reference is not None:
        return example.prompt + example.reference
    return "".join(segment.text for segment in example.segments)
