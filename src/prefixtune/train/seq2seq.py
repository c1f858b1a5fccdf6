"""Training data for encoder-decoders (T5, BART): prompt -> encoder, completion -> teacher-forced decoder.

One job: turn parsed `{"prompt", "completion"}` examples into encoder ids, decoder inputs and labels, pad
them, and score them (`Seq2SeqObjective`, the training loop's objective for T5/BART). Labels are the
completion; the decoder input is the completion shifted right behind the model's decoder start token
(teacher forcing). Depends on torch, `core` (is the model an encoder-decoder), `train.data`,
`train.formats` and `train.collate`; no model code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from prefixtune.core import is_encoder_decoder
from prefixtune.errors import ConfigError, DataError
from prefixtune.train.data import IGNORE_INDEX, SkipReport, encode_examples, encode_prompt
from prefixtune.train.formats import Example, TaskFormat


@dataclass(frozen=True, slots=True)
class Seq2SeqEncoded:
    """One example for an encoder-decoder.

    Attributes:
        input_ids: the encoder's token ids (the prompt, with the tokenizer's special tokens).
        decoder_input_ids: [decoder start] + target ids but the last (the target shifted right, as
            transformers' `shift_tokens_right` builds it from labels).
        labels: the target ids (the completion and EOS).
        source: `path:line`, for errors.
    """

    input_ids: tuple[int, ...]
    decoder_input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    source: str


def check_task(fmt: TaskFormat) -> None:
    """Encoder-decoders train on completions; refuse other task kinds with what to do.

    Raises:
        ConfigError: a classification or chat task.
    """
    if fmt.kind != "completion":
        raise ConfigError(
            f'task {fmt.kind!r} is not built for encoder-decoders (T5, BART); give {{"prompt", "completion"}} '
            "records (a label can be the completion) or use a decoder-only model"
        )


def encode_seq2seq_example(
    example: Example, tokenizer: Any, decoder_start_token_id: int, max_length: int | None = None
) -> Seq2SeqEncoded:
    """Tokenize the prompt for the encoder and the completion (EOS included) as the decoder's target.

    Raises:
        DataError: the target tokenizes to nothing, or either side exceeds `max_length` tokens.
    """
    prompt = encode_prompt(example, tokenizer)
    last = max(i for i, s in enumerate(example.segments) if s.has_loss)
    target = tokenizer(example.segments[last].text, add_special_tokens=False)["input_ids"]
    if not target:
        raise DataError(f"{example.source}: the completion tokenizes to no tokens; there is nothing to train on")
    longest = max(len(prompt), len(target))
    if max_length is not None and longest > max_length:
        raise DataError(
            f"{example.source}: {longest} tokens exceed --max-length {max_length}; "
            "raise --max-length or pass --skip-invalid to skip such records"
        )
    return Seq2SeqEncoded(tuple(prompt), (decoder_start_token_id, *target[:-1]), tuple(target), example.source)


def encode_seq2seq_examples(
    examples: Iterable[Example],
    tokenizer: Any,
    decoder_start_token_id: int,
    max_length: int | None,
    skips: SkipReport | None = None,
) -> list[Seq2SeqEncoded]:
    """Encode many examples; with `skips`, invalid ones are counted there instead of raising."""
    out = []
    for example in examples:
        try:
            out.append(encode_seq2seq_example(example, tokenizer, decoder_start_token_id, max_length))
        except DataError as exc:
            if skips is None:
                raise
            skips.add(str(exc))
    if not out:
        raise DataError("no records fit" + (f" ({skips.summary()})" if skips and skips.count else ""))
    return out


@dataclass(frozen=True, slots=True)
class Seq2SeqCollator:
    """Pads encoder and decoder sides on the right (T5's and BART's convention); padding never carries loss."""

    pad_token_id: int

    def __call__(self, batch: Sequence[Seq2SeqEncoded]) -> dict[str, torch.Tensor]:
        """Returns `input_ids`, `attention_mask` (B, T_enc) and `decoder_input_ids`, `decoder_attention_mask`,
        `labels` (B, T_dec), int64."""
        enc = _pad([e.input_ids for e in batch], self.pad_token_id)
        dec = _pad([e.decoder_input_ids for e in batch], self.pad_token_id)
        labels = _pad([e.labels for e in batch], IGNORE_INDEX)
        return {
            "input_ids": enc[0],
            "attention_mask": enc[1],
            "decoder_input_ids": dec[0],
            "decoder_attention_mask": dec[1],
            "labels": labels[0],
        }


def _pad(rows: Sequence[Sequence[int]], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), fill, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def decoder_start_token_id(model: Any) -> int:
    """The token the model's decoder starts from (T5: pad, BART: EOS), from its configs.

    Raises:
        ConfigError: the model states none.
    """
    for config in (getattr(model, "generation_config", None), model.config):
        start = getattr(config, "decoder_start_token_id", None)
        if isinstance(start, int):
            return start
    raise ConfigError(f"{type(model).__name__} has no decoder_start_token_id in its config; set one")


@dataclass(frozen=True, slots=True)
class Seq2SeqObjective:
    """An encoder-decoder's loss: -log p of every completion token, the decoder's logits (B, T_dec, V) at
    position t scored against labels[t] (the decoder input is already shifted right)."""

    pad_token_id: int

    def collate(self, batch: Sequence[Seq2SeqEncoded]) -> dict[str, torch.Tensor]:
        return Seq2SeqCollator(self.pad_token_id)(batch)

    def loss_sum(self, output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = output.logits.float()
        V = logits.shape[-1]
        return F.cross_entropy(
            logits.reshape(-1, V), batch["labels"].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )

    def label_count(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE_INDEX).sum())


def encode_train_set(
    model: Any, data: Any, tokenizer: Any, max_length: int | None, skips: SkipReport | None
) -> tuple[list[Any], Seq2SeqObjective | None]:
    """The training set as the base model trains on it, and the objective when it is not the default
    next-token loss: `Encoded` for a causal LM, `Seq2SeqEncoded` and `Seq2SeqObjective` for T5/BART.

    Args:
        data: the run's `train.run.TaskData` (its `train` examples and `fmt`).

    Raises:
        ConfigError: a task an encoder-decoder does not train on. DataError: see the encoders.
    """
    if not is_encoder_decoder(model):
        return encode_examples(data.train, tokenizer, max_length, skips), None
    check_task(data.fmt)
    start = decoder_start_token_id(model)
    return encode_seq2seq_examples(data.train, tokenizer, start, max_length, skips), Seq2SeqObjective(
        tokenizer.pad_token_id
    )
