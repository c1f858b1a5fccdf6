"""What a training step minimizes: next-token loss for causal LMs, the task head's loss for encoders.

One job: the collation of encoded examples into a batch, the summed loss of a batch and how many labels it
counted (the loop divides by the labels of the whole global step, over processes and micro-batches). Depends on
torch, `train.data` and `train.collate` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from prefixtune.train.collate import Collator
from prefixtune.train.data import IGNORE_INDEX, Encoded


class Objective(Protocol):
    """The seam between the training loop and what a task trains."""

    def collate(self, batch: Sequence[Encoded]) -> dict[str, torch.Tensor]:
        """`input_ids`, `attention_mask` (B, T) and `labels`."""
        ...

    def loss_sum(self, output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The summed loss of the batch's labels."""
        ...

    def label_count(self, batch: dict[str, torch.Tensor]) -> int:
        """How many labels `loss_sum` summed over."""
        ...


@dataclass(frozen=True, slots=True)
class NextTokenObjective:
    """Causal LM: -log p of every label token, labels (B, T) shifted by one against the logits (B, T, V)."""

    pad_token_id: int

    def collate(self, batch: Sequence[Encoded]) -> dict[str, torch.Tensor]:
        return Collator(self.pad_token_id, padding_side="right")(batch)

    def loss_sum(self, output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, labels = output.logits, batch["labels"]
        V = logits.shape[-1]
        shifted = logits[:, :-1].float().reshape(-1, V)  # (B * (T-1), V)
        return F.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")

    def label_count(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())  # the first position predicts nothing


@dataclass(frozen=True, slots=True)
class HeadObjective:
    """An encoder's task head: cross-entropy of its logits, (B, C) against one label per row (sequence
    classification) or (B, T, C) against one per token, IGNORE_INDEX where there is none (token
    classification: special tokens, padding, and every sub-word but a word's first)."""

    pad_token_id: int
    per_token: bool

    def collate(self, batch: Sequence[Encoded]) -> dict[str, torch.Tensor]:
        width = max(len(e.input_ids) for e in batch)
        B = len(batch)
        ids = torch.full((B, width), self.pad_token_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((B, width), dtype=torch.long)  # (B, T): right padding, as encoders are trained
        labels = torch.full((B, width) if self.per_token else (B,), IGNORE_INDEX, dtype=torch.long)
        for row, example in enumerate(batch):
            n = len(example.input_ids)
            ids[row, :n] = torch.tensor(example.input_ids)
            mask[row, :n] = 1
            if self.per_token:
                labels[row, :n] = torch.tensor(example.labels)
            else:
                labels[row] = example.labels[0]
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def loss_sum(self, output: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = output.logits.float()
        C = logits.shape[-1]
        return F.cross_entropy(
            logits.reshape(-1, C), batch["labels"].reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )

    def label_count(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE_INDEX).sum())
