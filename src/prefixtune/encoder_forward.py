"""Forward of an encoder whose adapters may own their task heads (`PrefixConfig.train_head`).

The bare encoder runs once for the whole batch through the one injection mechanism (`core.prefix_forward`),
each row with its adapter's prefix; then each group of rows that shares a head (an adapter's own, or the
model's) goes through that head (`core.run_head`; a mean-pooling head, `head_pooling="mean"`, reads the mean
of the rows' real-token states instead). So a batch mixing adapters gives every row the logits of
its own adapter, prefix and head together, as if it ran alone. Depends on core and parametrizations only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from prefixtune.core import prefix_forward, run_head
from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.parametrizations.task_head import TaskHead


def encoder_forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    prefix_kvs: Sequence[PrefixKV | None],
    heads: Sequence[TaskHead | None],
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    **kwargs: Any,
) -> Any:
    """The model's output with row r's prefix `prefix_kvs[r]` and head `heads[r]` (None: the model's head).

    Args:
        model: a supported encoder with a task head.
        input_ids: (B, n). attention_mask: (B, n). labels: (B,) or (B, n), as the model's head takes them.
        **kwargs: passed to the bare encoder (token_type_ids, ...).

    Returns:
        The head's output type: `.logits` (B, C) or (B, n, C); `.loss` with labels (with several heads, the
        row-weighted mean of each head's loss over its rows).
    """
    if all(h is None for h in heads):  # the model's own head for every row: its forward as it is
        return prefix_forward(
            model, input_ids, prefix_kvs=prefix_kvs, attention_mask=attention_mask, labels=labels, **kwargs
        )
    B = input_ids.shape[0]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    encoded = prefix_forward(
        model.base_model, input_ids, prefix_kvs=prefix_kvs, attention_mask=attention_mask, **kwargs
    )
    groups: dict[int, tuple[TaskHead | None, list[int]]] = {}
    for row, head in enumerate(heads):
        groups.setdefault(id(head), (head, []))[1].append(row)
    logits, loss, out = None, None, None
    for head, rows in groups.values():
        index = torch.tensor(rows, device=input_ids.device)
        part = type(encoded)(**{k: v[index] for k, v in encoded.items() if isinstance(v, torch.Tensor)})
        like = encoded.last_hidden_state
        rows_labels = None if labels is None else labels[index]
        if head is not None and head.pooling == "mean":
            out = _mean_head_output(head, part.last_hidden_state, attention_mask[index], rows_labels)
        else:
            out = run_head(
                model,
                part,
                None if head is None else head.params(like),
                input_ids=input_ids[index],
                attention_mask=attention_mask[index],
                labels=rows_labels,
            )
        if logits is None:
            logits = out.logits.new_zeros((B, *out.logits.shape[1:]))
        logits = logits.index_copy(0, index, out.logits)
        if out.loss is not None:
            weighted = out.loss * (len(rows) / B)
            loss = weighted if loss is None else loss + weighted
    return type(out)(loss=loss, logits=logits)


def _mean_head_output(
    head: TaskHead, hidden: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None
) -> SequenceClassifierOutput:
    """A mean-pooling head's output for its rows: logits (b, C) and, with labels, the loss the model's own
    sequence-classification head would use (cross-entropy; mean squared error for one label)."""
    logits = head.mean_logits(hidden, attention_mask)
    loss = None
    if labels is not None:
        if logits.shape[-1] == 1:
            loss = nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
        else:
            loss = nn.functional.cross_entropy(logits.float(), labels.view(-1))
    return SequenceClassifierOutput(loss=loss, logits=logits)
