"""Encoder tasks: parsed examples -> token ids and head labels (one per text, or one per word).

One job: tokenizing `{"text", "label"}` records for a sequence-classification head (the raw text, with the
tokenizer's [CLS]/[SEP]; no template) and `{"tokens", "tags"}` records for a token-classification head (words
split as given; a word's first sub-word carries its tag, the rest and the special tokens IGNORE_INDEX).
Errors are `DataError`s naming the record. Depends on `train.data`, `train.formats` and a fast tokenizer.
"""

from __future__ import annotations

from typing import Any

from prefixtune.encoder_models import HEAD_FOR_TASK
from prefixtune.errors import DataError
from prefixtune.train.data import IGNORE_INDEX, Encoded
from prefixtune.train.formats import Example, TaskFormat


def head_for(fmt: TaskFormat) -> str:
    """The encoder head a task trains ("sequence" or "token").

    Raises:
        DataError: a task an encoder cannot train (completion, chat).
    """
    head = HEAD_FOR_TASK.get(fmt.kind)
    if head is None:
        raise DataError(
            f"an encoder trains classification ({{'text', 'label'}}) or token classification "
            f"({{'tokens', 'tags'}}) records, not {fmt.kind}; use a causal LM for {fmt.kind} data"
        )
    return head


def encode_for_head(example: Example, fmt: TaskFormat, tokenizer: Any, max_length: int | None) -> Encoded:
    """Token ids and head labels of one example.

    Raises:
        DataError: longer than `max_length` tokens, or a slow tokenizer for token classification.
    """
    ids_to = {label: i for i, label in enumerate(fmt.labels)}
    if fmt.kind == "token_classification":
        if not getattr(tokenizer, "is_fast", False):
            raise DataError("token classification needs a fast tokenizer (tokenizer.json) to map sub-words to words")
        enc = tokenizer(list(example.tokens), is_split_into_words=True)
        ids, seen, labels = enc["input_ids"], set(), []
        for word in enc.word_ids():
            first = word is not None and word not in seen
            labels.append(ids_to[example.tags[word]] if first else IGNORE_INDEX)
            if word is not None:
                seen.add(word)
    else:
        ids = tokenizer(example.text if example.text is not None else example.prompt)["input_ids"]
        labels = [ids_to[example.label]]
    if max_length is not None and len(ids) > max_length:
        raise DataError(
            f"{example.source}: {len(ids)} tokens exceed --max-length {max_length}; "
            "raise --max-length or pass --skip-invalid to skip such records"
        )
    return Encoded(tuple(ids), tuple(labels), example.source)
