"""Evaluate a model, with or without an adapter, on parsed examples of a task.

One job: run the model the way training saw the data and return metrics. Classification scores each
verbalizer option (accuracy, macro-F1); completion and chat tasks generate greedily and compare to the
references (exact match, BLEU, ROUGE-L). It goes through the core forward with `adapter_names`, where a
`None` row is the bare model, so the zero-shot baseline and the trained number come from the same code.
Depends on the core's public model API, `train.data`, `train.metrics`; no files, no CLI.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel

from prefixtune.core import has_bidirectional_attention, is_encoder_decoder
from prefixtune.core.positions import shifted_position_ids
from prefixtune.train.collate import pad_prompts
from prefixtune.train.data import encode_prompt
from prefixtune.train.encoder_eval import head_metrics, head_predictions
from prefixtune.train.formats import Example, TaskFormat
from prefixtune.train.metrics import (
    LogitsFn,
    accuracy,
    generation_metric_settings,
    generation_metrics,
    macro_f1,
    score_options,
)
from prefixtune.train.seq2seq import check_task

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Metrics of one evaluation and the prediction for each example (label or generated text)."""

    metrics: dict[str, float]
    predictions: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)  # how metrics were computed (sacrebleu signature)


def _is_bare(model: Any) -> bool:
    return isinstance(model, PreTrainedModel)


def _base(model: Any) -> Any:
    return model if _is_bare(model) else model.base_model


def logits_fn_for(model: Any, adapter_name: str | None) -> LogitsFn:
    """A `(ids, mask) -> logits` function: the prefix model with one adapter on every row, or none."""

    def run(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if _is_bare(model):
            # Scoring left-pads; transformers' forward numbers positions 0..T-1 regardless of the mask, which
            # moves a left-padded row of an absolute-position model (GPT-2) away from how it was trained.
            # Number the real tokens from 0, as the prefix path does (issue 14).
            offsets = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
            positions = shifted_position_ids(attention_mask, offsets)  # (B, T)
            return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits
        names = [adapter_name] * input_ids.shape[0]
        return model(input_ids=input_ids, attention_mask=attention_mask, adapter_names=names).logits

    return run


def generate_ids(
    model: Any, adapter_name: str | None, batch: dict[str, torch.Tensor], **generate_kwargs: Any
) -> torch.Tensor:
    """Generate with the prefix model (one adapter on every row) or a bare HF model; (B, T + new)."""
    if _is_bare(model):
        return model.generate(**batch, **generate_kwargs)
    names = [adapter_name] * batch["input_ids"].shape[0]
    return model.generate(**batch, adapter_names=names, **generate_kwargs)


def _classify(
    model: Any, tokenizer: Any, examples: Sequence[Example], fmt: TaskFormat, adapter: str | None, bs: int
) -> EvalResult:
    prompts = [encode_prompt(e, tokenizer) for e in examples]
    options = [tokenizer(fmt.verbalizer[label], add_special_tokens=False)["input_ids"] for label in fmt.labels]
    scores = score_options(
        logits_fn_for(model, adapter), prompts, options, pad_token_id=tokenizer.pad_token_id, batch_size=bs
    )  # (N, K)
    predictions = [fmt.labels[i] for i in scores.argmax(-1).tolist()]
    references = [e.label or "" for e in examples]
    metrics = {
        "accuracy": accuracy(predictions, references),
        "macro_f1": macro_f1(predictions, references, fmt.labels),
        "n": float(len(examples)),
    }
    return EvalResult(metrics, predictions)


@torch.no_grad()
def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    adapter_name: str | None,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 64,
) -> list[str]:
    """Greedy continuations of token-id prompts, decoded without special tokens, in input order."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = pad_prompts([prompts[i] for i in rows], tokenizer.pad_token_id)
        ids = generate_ids(
            model,
            adapter_name,
            batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        # A causal LM returns prompt + continuation; an encoder-decoder only the decoder's tokens.
        width = 0 if is_encoder_decoder(_base(model)) else batch["input_ids"].shape[1]
        for row, seq in zip(rows, ids[:, width:], strict=True):
            out[row] = tokenizer.decode(seq, skip_special_tokens=True).strip()
    return out


def _generate(
    model: Any, tokenizer: Any, examples: Sequence[Example], adapter: str | None, bs: int, max_new: int
) -> EvalResult:
    prompts = [encode_prompt(e, tokenizer) for e in examples]
    predictions = generate_texts(model, tokenizer, prompts, adapter, batch_size=bs, max_new_tokens=max_new)
    references = [list(e.references) or [e.reference or ""] for e in examples]
    metrics = generation_metrics(predictions, references)
    metrics["n"] = float(len(examples))
    return EvalResult(metrics, predictions, generation_metric_settings(predictions, references))


def evaluate(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    fmt: TaskFormat,
    *,
    adapter_name: str | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 64,
) -> EvalResult:
    """Evaluate on examples of one task.

    Args:
        model: a prefix model (from `prefixtune.attach` / `load_adapter`) or a bare HF causal LM.
        tokenizer: the model's tokenizer (its pad token must be set, as `load_model` does).
        examples: parsed examples of the task.
        fmt: the task format (classification scores options, or on an encoder reads its task head;
            token classification reads an encoder's tagger; other kinds generate).
        adapter_name: the adapter on every row, or None for the bare model.
        batch_size: rows per forward pass.
        max_new_tokens: generation budget for completion and chat tasks.

    Returns:
        `EvalResult`: classification gives `accuracy`, `macro_f1`, `n` (token classification: over tagged
        words); generation gives `exact_match`, `bleu` (0-100), `rougeL` (0-1), `n`.
    """
    if is_encoder_decoder(_base(model)):
        check_task(fmt)  # encoder-decoders generate completions; they do not score options
    # Every module's own mode, restored after: `attach` returns a module in training mode around a base in eval
    # mode, and a blanket `model.train()` afterwards would turn the base's dropout on (issue 14).
    modes = [(m, m.training) for m in model.modules()] if hasattr(model, "modules") else []
    if hasattr(model, "eval"):
        model.eval()
    try:
        if _is_encoder(model):
            predicted, reference = head_predictions(model, tokenizer, examples, fmt, adapter_name, batch_size)
            return EvalResult(head_metrics(predicted, reference, fmt, len(examples)), predicted)
        if fmt.kind == "classification":
            return _classify(model, tokenizer, examples, fmt, adapter_name, batch_size)
        return _generate(model, tokenizer, examples, adapter_name, batch_size, max_new_tokens)
    finally:
        for module, training in modes:
            module.training = training


def _is_encoder(model: Any) -> bool:
    return has_bidirectional_attention(model if _is_bare(model) else model.base_model)


def primary_metric(fmt: TaskFormat) -> str:
    """The metric that picks the best checkpoint: accuracy for classification, tag macro-F1 for token
    classification (most tags are usually "O"), ROUGE-L otherwise."""
    return {"classification": "accuracy", "token_classification": "macro_f1"}.get(fmt.kind, "rougeL")
