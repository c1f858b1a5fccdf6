"""Evaluate an encoder's task head, with or without an adapter: accuracy and macro-F1 over labels (sequence
classification) or over tagged words (token classification: tag accuracy and macro-F1 over tags).

One job: run the model as training saw the data (right padding, `train.encoder_data`) and compare its argmax
to the labels. Rows go through the core forward with `adapter_names` (None: the bare model and its own head).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from prefixtune.train.data import IGNORE_INDEX
from prefixtune.train.encoder_data import encode_for_head
from prefixtune.train.formats import Example, TaskFormat
from prefixtune.train.metrics import accuracy, macro_f1
from prefixtune.train.objective import HeadObjective


@torch.no_grad()
def head_predictions(
    model: Any, tokenizer: Any, examples: Sequence[Example], fmt: TaskFormat, adapter_name: str | None, batch_size: int
) -> tuple[list[str], list[str]]:
    """(predicted, reference) label names: one per example, or one per tagged word."""
    objective = HeadObjective(tokenizer.pad_token_id, per_token=fmt.kind == "token_classification")
    encoded = [encode_for_head(e, fmt, tokenizer, None) for e in examples]
    predicted, reference = [], []
    device = next(model.parameters()).device
    for start in range(0, len(encoded), batch_size):
        batch = objective.collate(encoded[start : start + batch_size])
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        if hasattr(model, "adapter_names"):
            logits = model(input_ids=ids, attention_mask=mask, adapter_names=[adapter_name] * len(ids)).logits
        else:
            logits = model(input_ids=ids, attention_mask=mask).logits
        chosen = logits.argmax(-1).cpu()  # (B,) or (B, T)
        keep = batch["labels"] != IGNORE_INDEX
        predicted += [fmt.labels[i] for i in chosen[keep].tolist()]
        reference += [fmt.labels[i] for i in batch["labels"][keep].tolist()]
    return predicted, reference


def head_metrics(predicted: Sequence[str], reference: Sequence[str], fmt: TaskFormat, n: int) -> dict[str, float]:
    """accuracy, macro_f1 (over the task's labels or tags) and n (examples)."""
    return {
        "accuracy": accuracy(predicted, reference),
        "macro_f1": macro_f1(predicted, reference, fmt.labels),
        "n": float(n),
    }
