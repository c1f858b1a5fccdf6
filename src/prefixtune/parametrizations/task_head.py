"""An adapter's own copy of the model's task head (`PrefixConfig.train_head`, P-tuning v2).

The head of an encoder's `...ForSequenceClassification` / `...ForTokenClassification` (every weight outside
the bare encoder) trains alongside the prefix. Each adapter owns its copy, so the base model stays frozen and
bit-identical, adapters with different heads mix in one batch, and the head is saved with the adapter
(`head.safetensors`). Must not depend on io/, train/ or serve/.
"""

from __future__ import annotations

import torch
from torch import nn


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys may not hold "."


class TaskHead(nn.Module):
    """Trainable copies of the head's parameters, by their names in the model ("classifier.weight", ...)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.names = sorted(tensors)
        self.weights = nn.ParameterDict({_key(n): nn.Parameter(tensors[n].detach().clone()) for n in self.names})

    @classmethod
    def copy_of(cls, model: nn.Module, names: list[str]) -> TaskHead:
        """A copy of `model`'s own head parameters `names`, in fp32."""
        params = dict(model.named_parameters())
        return cls({n: params[n].detach().float() for n in names})

    def params(self, like: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Name -> tensor, for `core.run_head` (cast to `like`'s dtype, differentiably, when given)."""
        out = {n: self.weights[_key(n)] for n in self.names}
        return out if like is None else {n: t.to(like.dtype) for n, t in out.items()}

    def state(self) -> dict[str, torch.Tensor]:
        """Detached fp32 tensors to save, by their names in the model."""
        return {n: self.weights[_key(n)].detach().float().contiguous() for n in self.names}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.weights.values())
