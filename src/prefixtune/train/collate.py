"""Collation: pad a list of `Encoded` examples into a batch of tensors with loss masks.

One job: `input_ids`, `attention_mask` and `labels` (B, T), padded on the left or the right. Padding gets
attention mask 0 and label IGNORE_INDEX, so it neither attends nor carries loss. Depends on torch and
`train.data` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prefixtune.train.data import IGNORE_INDEX, Encoded


@dataclass(frozen=True, slots=True)
class Collator:
    """Callable that pads `Encoded` examples into a batch.

    Attributes:
        pad_token_id: id written into padded positions (never attended, never scored).
        padding_side: `right` (default for training) or `left` (what generation needs).
    """

    pad_token_id: int
    padding_side: str = "right"

    def __post_init__(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")

    def __call__(self, batch: Sequence[Encoded]) -> dict[str, torch.Tensor]:
        """Pad a batch; returns `input_ids`, `attention_mask`, `labels`, each (B, T) int64."""
        width = max(len(e.input_ids) for e in batch)
        ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        for row, example in enumerate(batch):
            n = len(example.input_ids)
            cols = slice(width - n, width) if self.padding_side == "left" else slice(0, n)
            ids[row, cols] = torch.tensor(example.input_ids)
            mask[row, cols] = 1
            labels[row, cols] = torch.tensor(example.labels)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pad_prompts(
    prompts: Sequence[Sequence[int]], pad_token_id: int, padding_side: str = "left"
) -> dict[str, torch.Tensor]:
    """Pad bare token-id lists (no labels), left by default, for scoring and generation."""
    encoded = [Encoded(tuple(p), tuple(p), "") for p in prompts]
    batch = Collator(pad_token_id, padding_side)(encoded)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
