"""An adapter's own copy of the model's task head (`PrefixConfig.train_head`, P-tuning v2).

The head of an encoder's `...ForSequenceClassification` / `...ForTokenClassification` (every weight outside
the bare encoder) trains alongside the prefix. Each adapter owns its copy, so the base model stays frozen and
bit-identical, adapters with different heads mix in one batch, and the head is saved with the adapter
(`head.safetensors`). Must not depend on io/, train/ or serve/.

`PrefixConfig.head_pooling="mean"`: instead of a copy of the model's head, a fresh `Linear(d, num_labels)`
(`MEAN_HEAD_NAMES`) on the attention-mask-weighted mean of the real tokens' last hidden states
(`core.hf.task_head.mean_pool`), replacing the model's pooler and classifier for this adapter's rows.
"""

from __future__ import annotations

import torch
from torch import nn

MEAN_HEAD_NAMES = ("mean_head.weight", "mean_head.bias")  # head.safetensors names of a mean-pooling head


def mean_head_shapes(hidden_size: int, num_labels: int) -> dict[str, tuple[int, ...]]:
    """The tensors a mean-pooling head saves, by name."""
    return {MEAN_HEAD_NAMES[0]: (num_labels, hidden_size), MEAN_HEAD_NAMES[1]: (num_labels,)}


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys may not hold "."


class TaskHead(nn.Module):
    """Trainable copies of the head's parameters, by their names in the model ("classifier.weight", ...), or
    (`pooling="mean"`) a linear classifier on mean-pooled states (`MEAN_HEAD_NAMES`)."""

    def __init__(self, tensors: dict[str, torch.Tensor], pooling: str = "model") -> None:
        super().__init__()
        if (pooling == "mean") != (sorted(tensors) == sorted(MEAN_HEAD_NAMES)):  # never a mean head run as a copy
            raise ValueError(f"head tensors {sorted(tensors)} do not make a head with pooling {pooling!r}")
        self.pooling = pooling
        self.names = sorted(tensors)
        self.weights = nn.ParameterDict({_key(n): nn.Parameter(tensors[n].detach().clone()) for n in self.names})

    @classmethod
    def mean_pooling(cls, hidden_size: int, num_labels: int, seed: int | None = None) -> TaskHead:
        """A fresh mean-pooling head, initialized as `nn.Linear(hidden_size, num_labels)` (seeded if given)."""
        g = None if seed is None else torch.Generator().manual_seed(seed)
        bound = hidden_size**-0.5  # nn.Linear's default: U(-1/sqrt(d), 1/sqrt(d)) for weight and bias
        weight = (torch.rand(num_labels, hidden_size, generator=g) * 2 - 1) * bound
        bias = (torch.rand(num_labels, generator=g) * 2 - 1) * bound
        return cls(dict(zip(MEAN_HEAD_NAMES, (weight, bias), strict=True)), pooling="mean")

    def mean_logits(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """A mean-pooling head's logits (B, C) for last hidden states (B, n, d) of the real tokens."""
        from prefixtune.core import mean_pool

        weight, bias = (self.weights[_key(n)].to(hidden.dtype) for n in MEAN_HEAD_NAMES)
        return nn.functional.linear(mean_pool(hidden, attention_mask), weight, bias)

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
