"""Position ids of the real tokens next to a prefix (DESIGN.md §1, "Positions").

Convention "shifted" (the default, as PEFT and the original code): the literal sequence [P^l ; H] is numbered
0..m+n-1, so prefix vector i sits at position i and real token j at m + j, where j counts real tokens only
(left padding removed, read from the attention mask as transformers does). Each row uses its own m, so a
batch mixing adapters of different lengths, and rows with no adapter (m = 0), is numbered row by row.

Convention "unshifted" (encoders with learned absolute positions: BERT, RoBERTa): real token j keeps position
j, as without an adapter, so a 512-position model keeps all 512 for real tokens. The per-layer prefixes carry
no position embedding there anyway (they enter as hidden states or keys/values, after the embeddings).
Encoders number from their own first position (RoBERTa: padding_idx + 1), read by `core.hf.encoder`.
"""

from __future__ import annotations

import torch
from torch import nn

from prefixtune.core.hf.encoder import encoder_family, encoder_position_ids


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


def real_position_ids(model: nn.Module, attention_mask: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Position ids of the real tokens of `model` (a decoder, or an encoder numbering from its own start).

    Args:
        attention_mask: (B, T), 1 = real token. shifts: (B,) long, each row's shift (`PrefixBatch.position_shifts`).

    Returns:
        (B, T) long.
    """
    if encoder_family(model) is not None:
        return encoder_position_ids(model, attention_mask, shifts)
    return shifted_position_ids(attention_mask, shifts)
