"""Method "kv": per-layer keys and values trained directly (the form of PEFT's PrefixTuningConfig).

2 x L x m x (H_kv * D) numbers. The keys are used as the attention consumes them (no norm, no rotation is
applied to them), as PEFT does. The optional reparametrization MLP produces, per virtual token, the layers'
keys and values in PEFT's order: layer 0 keys, layer 0 values, layer 1 keys, ...
"""

from __future__ import annotations

import torch
from torch import nn

from prefixtune.config import PrefixConfig
from prefixtune.core.capture import capture_kv
from prefixtune.core.hf.geometry import ModelGeometry
from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.parametrizations.base import Parametrization
from prefixtune.parametrizations.init import embedding_scale, init_token_ids, random_normal
from prefixtune.parametrizations.registry import register
from prefixtune.parametrizations.reparam import ReparamMLP


@register
class KVPrefix(Parametrization):
    """Trainable keys/values per layer, (H_kv, m, D) each."""

    method = "kv"

    def __init__(
        self,
        config: PrefixConfig,
        geometry: ModelGeometry,
        keys: list[torch.Tensor] | None = None,
        values: list[torch.Tensor] | None = None,
        reparam: ReparamMLP | None = None,
    ) -> None:
        super().__init__(config, geometry)
        self.keys = nn.ParameterList(keys) if keys is not None else None
        self.values = nn.ParameterList(values) if values is not None else None
        self.reparam = reparam

    @classmethod
    def create(cls, config, model, geometry, tokenizer):
        m = config.num_virtual_tokens
        device = model.get_input_embeddings().weight.device
        like = torch.empty(0, dtype=torch.float32, device=device)
        if config.reparam_hidden is not None:
            out = sum(2 * H * D for H, D in geometry.kv_shapes)
            if config.init == "random":
                table = random_normal((m, geometry.hidden_size), embedding_scale(model), config, like)
            else:
                table = model.get_input_embeddings()(init_token_ids(config, model, tokenizer))[0].detach().float()
            return cls(config, geometry, reparam=ReparamMLP(table, config.reparam_hidden, out))
        # "vocab" and "text" start from real keys/values; "random" draws noise at their per-layer scale.
        probe = config if config.init != "random" else config.replace(init="vocab")
        with torch.no_grad():
            keys, values = capture_kv(model, input_ids=init_token_ids(probe, model, tokenizer))
        keys = [k[0].float() for k in keys]
        values = [v[0].float() for v in values]
        if config.init == "random":
            keys = [random_normal(tuple(k.shape), float(k.std()), config, like) for k in keys]
            values = [random_normal(tuple(v.shape), float(v.std()), config, like) for v in values]
        return cls(config, geometry, keys=keys, values=values)

    def layer_tensors(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer (H_kv, m, D) keys and values, produced by the MLP while it exists."""
        if self.reparam is None:
            return list(self.keys), list(self.values)
        flat = self.reparam()  # (m, sum_l 2 * H_l * D_l)
        m = flat.shape[0]
        keys, values, start = [], [], 0
        for H, D in self.geometry.kv_shapes:
            for out in (keys, values):
                out.append(flat[:, start : start + H * D].view(m, H, D).transpose(0, 1))
                start += H * D
        return keys, values

    def compile(self, model: nn.Module, fingerprint: dict | None = None) -> PrefixKV:
        keys, values = self.layer_tensors()
        return self._kv(keys, values, fingerprint)

    def folded_state(self) -> dict[str, torch.Tensor]:
        keys, values = self.layer_tensors()
        out = {f"keys.{i}": k.detach().float().contiguous() for i, k in enumerate(keys)}
        out.update({f"values.{i}": v.detach().float().contiguous() for i, v in enumerate(values)})
        return out

    @classmethod
    def expected_shapes(cls, config, geometry) -> dict[str, tuple[int, ...]]:
        m = config.num_virtual_tokens
        out = {}
        for i, (H, D) in enumerate(geometry.kv_shapes):
            out[f"keys.{i}"] = (H, m, D)
            out[f"values.{i}"] = (H, m, D)
        return out

    @classmethod
    def from_folded(cls, config, geometry, tensors):
        L = geometry.num_layers
        keys = [tensors[f"keys.{i}"].float() for i in range(L)]
        values = [tensors[f"values.{i}"].float() for i in range(L)]
        return cls(config.replace(reparam_hidden=None), geometry, keys=keys, values=values)
