"""The reparametrization MLP of Li & Liang (2021, §4.3): P = MLP(P'), for stabler training.

P' is a small (m, d) table; the MLP (Linear -> tanh -> Linear) maps each row to the per-layer parameters.
It exists during training only: on save the produced tensor is stored and the MLP is dropped.
"""

from __future__ import annotations

import torch
from torch import nn


class ReparamMLP(nn.Module):
    """P = W2 tanh(W1 P' + b1) + b2, producing `out_features` numbers per virtual token."""

    def __init__(self, embedding: torch.Tensor, hidden: int, out_features: int) -> None:
        super().__init__()
        d = embedding.shape[1]
        self.embedding = nn.Parameter(embedding.clone())  # (m, d)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, out_features))
        self.mlp.to(device=embedding.device, dtype=embedding.dtype)

    def forward(self) -> torch.Tensor:
        """(m, out_features)."""
        return self.mlp(self.embedding)
