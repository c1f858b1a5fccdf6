"""Method "kv": per-layer keys and values trained directly (the form of PEFT's PrefixTuningConfig).

2 x L x m x (H_kv * D) numbers. The keys are used as the attention consumes them (no norm, no rotation is
applied to them), as PEFT does. The optional reparametrization MLP produces, per virtual token, the layers'
keys and values in PEFT's order: layer 0 keys, layer 0 values, layer 1 keys, ...
"""

from __future__ import annotations

import re

import torch
from torch import nn

from prefixtune.config import PrefixConfig
from prefixtune.core.capture import capture_kv
from prefixtune.core.geometry import ModelGeometry
from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.core.reference import reference_kv_logits
from prefixtune.core.reference_seq2seq import SitePrefixes
from prefixtune.core.seq2seq_capture import pick_sites
from prefixtune.parametrizations.base import PREFIX_TUNING, Parametrization, PeftTensors
from prefixtune.parametrizations.init import embedding_scale, generator, init_token_ids, random_normal
from prefixtune.parametrizations.registry import register
from prefixtune.parametrizations.reparam import ReparamMLP

_NAME = re.compile(r"^(keys|values)\.(\d+)$")


@register
class KVPrefix(Parametrization):
    """Trainable keys/values per layer, (H_kv, m, D) each; stored as `keys.{l}` and `values.{l}`."""

    method = "kv"
    trains = "per-layer keys and values, (H_kv x m x D) each"
    injected = "prepended to every layer's attention keys/values"
    peft_import_type = PREFIX_TUNING
    compiles_without_model = True  # the stored tensors are the keys/values
    # bench/RESULTS-quality-suite.md (debates-2016, SmolLM2-135M, validation over the sweep): 0.34 at 3e-3,
    # 0.40 at 1e-2, 0.28 at 3e-2 (unstable); P-tuning v2 trains deep prompts at 5e-3..1e-2.
    default_learning_rate = 1e-2

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
        rng = generator(config)  # one stream for every draw: layers, keys and values all differ
        if config.reparam_hidden is not None:
            out = sum(2 * H * D for H, D in geometry.kv_shapes)
            if config.init == "random":
                table = random_normal((m, geometry.hidden_size), embedding_scale(model), rng, like)
            else:
                table = model.get_input_embeddings()(init_token_ids(config, model, tokenizer, rng))[0].detach().float()
            return cls(config, geometry, reparam=ReparamMLP(table, config.reparam_hidden, out))
        # "vocab" and "text" start from real keys/values; "random" draws noise at their per-layer scale.
        probe = config if config.init != "random" else config.replace(init="vocab")
        with torch.no_grad():
            keys, values = capture_kv(model, input_ids=init_token_ids(probe, model, tokenizer, rng))
        if geometry.sites:  # an encoder-decoder: the slots of the adapter's sites only
            keys, values = pick_sites(model, keys, geometry.sites), pick_sites(model, values, geometry.sites)
        keys = [k[0].float() for k in keys]
        values = [v[0].float() for v in values]
        if config.init == "random":
            keys = [random_normal(tuple(k.shape), float(k.std()), rng, like) for k in keys]
            values = [random_normal(tuple(v.shape), float(v.std()), rng, like) for v in values]
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

    @classmethod
    def layout_problem(cls, tensors: dict[str, torch.Tensor]) -> str | None:
        names = [n for n in tensors if _NAME.match(n)]
        if names and len(names) == len(tensors) and all(tensors[n].ndim == 3 for n in names):
            return None
        return "stores keys.{l} and values.{l}, 3-D"

    @classmethod
    def layer_views(cls, tensors: dict[str, torch.Tensor]) -> list[torch.Tensor] | None:
        indices = [int(match.group(2)) for name in tensors if (match := _NAME.match(name))]
        out = []
        for i in range(max(indices) + 1 if indices else 0):
            parts = [tensors[n].flatten() for n in (f"keys.{i}", f"values.{i}") if n in tensors]
            out.append(torch.cat(parts) if parts else torch.zeros(0))
        return out

    @classmethod
    def width_problem(cls, tensors: dict[str, torch.Tensor], geometry: ModelGeometry) -> str | None:
        for i, (H, D) in enumerate(geometry.kv_shapes):
            for kind in ("keys", "values"):
                tensor = tensors.get(f"{kind}.{i}")
                if tensor is not None and (tensor.shape[0], tensor.shape[-1]) != (H, D):
                    return (
                        f"layer {i} {kind} have {tensor.shape[0]} heads of size {tensor.shape[-1]}, but the "
                        f"model's attention uses {H} key/value heads of size {D}"
                    )
        return None

    @classmethod
    def tensors_from_peft(cls, adapter: PeftTensors) -> dict[str, torch.Tensor]:
        keys, values = adapter.layer_kv()
        return {f"keys.{i}": k for i, k in enumerate(keys)} | {f"values.{i}": v for i, v in enumerate(values)}

    def reference_logits(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        keys, values = self.layer_tensors()
        return reference_kv_logits(
            model,
            input_ids,
            attention_mask,
            keys,
            values,
            position_convention=self.config.position_convention,
            head_params=self.head_params(),
        )

    def site_prefixes(self) -> SitePrefixes:
        """Encoder-decoders: this adapter's keys/values per site, for the literal reference path."""
        keys, values = self.layer_tensors()
        kv: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for k, v, site in zip(keys, values, self.geometry.sites, strict=True):
            kv.setdefault(site, ([], []))
            kv[site][0].append(k)
            kv[site][1].append(v)
        return SitePrefixes(hidden={}, kv=kv)
