"""Position ids of the real tokens next to a prefix (DESIGN.md §1, "Positions").

Convention "shifted" (the default, as PEFT and the original code): the literal sequence [P^l ; H] is numbered
0..m+n-1, so prefix vector i sits at position i and real token j at m + j, where j counts real tokens only
(left padding removed, read from the attention mask as transformers does). Each row uses its own m, so a
batch mixing adapters of different lengths, and rows with no adapter (m = 0), is numbered row by row.
"""

from __future__ import annotations

import torch


def shifted_position_ids(attention_mask: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Position ids for real tokens after a per-row prefix.

    Args:
        attention_mask: (B, T) with 1 for real tokens and 0 for padding.
        offsets: (B,) long, the row's m (0 for rows without a prefix).

    Returns:
        (B, T) long: m_row + (number of real tokens before this one); padding positions get m_row.
    """
    counts = attention_mask.long().cumsum(-1) - 1  # (B, T)
    return counts.clamp(min=0) + offsets.to(counts.device).long()[:, None]
