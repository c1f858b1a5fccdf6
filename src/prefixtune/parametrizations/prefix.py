"""Method "prefix": the hidden-state prefix P^l of each layer (DESIGN.md §1, the method itself).

Layer l sees [P^l ; H^{l-1}] and only the last n outputs go on, so P^l acts only through the keys and values
layer l's frozen attention computes from it. Compiling runs every layer once on its own P^l (positions
0..m-1) and records those keys/values.
"""

from __future__ import annotations

import torch
from torch import nn

from prefixtune.config import PrefixConfig
from prefixtune.core import is_encoder_decoder
from prefixtune.core.capture import capture_kv, layer_input_states
from prefixtune.core.geometry import ModelGeometry
from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.core.reference import reference_logits
from prefixtune.core.reference_seq2seq import SitePrefixes
from prefixtune.parametrizations import hidden_checks, prefix_seq2seq
from prefixtune.parametrizations.base import Observation, Parametrization
from prefixtune.parametrizations.init import embedding_scale, generator, init_token_ids, random_normal
from prefixtune.parametrizations.registry import register
from prefixtune.parametrizations.reparam import ReparamMLP


@register
class HiddenStatePrefix(Parametrization):
    """Trainable P^l for every layer l: L x m x d numbers (or an MLP producing them while training)."""

    method = "prefix"
    trains = "hidden-state prefixes P^l, one (m x d) matrix per layer"
    injected = (
        "every layer sees [P^l ; H^(l-1)]; P^l reaches the real tokens only through the keys/values the "
        "layer's frozen attention computes from it (prefix outputs are discarded)"
    )
    # P^l reaches attention through the layer's RMSNorm, and hidden states carry massive activations (one
    # dimension holds most of a vector's norm), so AdamW's equal-size steps turn P^l's direction slowly: it
    # needs a larger rate than `kv`. bench/RESULTS-quality-levers.md (debates-2016, validation): 0.20 at 3e-3,
    # 0.29 at 1e-2, 0.37 at 3e-2, 0.36 at 1e-1.
    default_learning_rate = 3e-2

    def __init__(
        self,
        config: PrefixConfig,
        geometry: ModelGeometry,
        prefix: torch.Tensor | None = None,
        reparam: ReparamMLP | None = None,
        cross: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None,
    ) -> None:
        super().__init__(config, geometry)
        self.prefix = nn.Parameter(prefix) if prefix is not None else None  # (L, m, d)
        self.reparam = reparam
        # Encoder-decoders: the cross-attention site is trained as keys/values (H_kv, m, D) per decoder layer,
        # as in Li & Liang's BART setting; P^l covers the encoder and decoder self-attention layers.
        self.cross_keys = nn.ParameterList(cross[0]) if cross else None
        self.cross_values = nn.ParameterList(cross[1]) if cross else None

    @classmethod
    def create(cls, config, model, geometry, tokenizer):
        if geometry.sites:
            return prefix_seq2seq.create(cls, config, model, geometry, tokenizer)
        L, m, d = geometry.num_layers, config.num_virtual_tokens, geometry.hidden_size
        like = torch.empty(0, dtype=torch.float32, device=model.get_input_embeddings().weight.device)
        rng = generator(config)
        std = embedding_scale(model)
        ids = None if config.init == "random" else init_token_ids(config, model, tokenizer, rng)
        if config.reparam_hidden is not None:
            if ids is None:
                table = random_normal((m, d), std, rng, like)
            else:
                table = model.get_input_embeddings()(ids)[0].detach().float()
            return cls(config, geometry, reparam=ReparamMLP(table, config.reparam_hidden, L * d))
        if ids is None:
            start = random_normal((L, m, d), std, rng, like)
        else:
            with torch.no_grad():
                start = layer_input_states(model, ids)[0].float()  # (L, m, d)
        return cls(config, geometry, prefix=start)

    def states(self) -> torch.Tensor:
        """The effective prefixes P^l, (L, m, d)."""
        if self.reparam is not None:
            m, L = self.config.num_virtual_tokens, prefix_seq2seq.hidden_layers(self.geometry)
            return self.reparam().view(m, L, -1).transpose(0, 1)
        return self.prefix

    def compile(self, model: nn.Module, fingerprint: dict | None = None) -> PrefixKV:
        if self.geometry.sites:
            keys, values = prefix_seq2seq.compile_kv(self, model)
            return self._kv(keys, values, fingerprint)
        P = self.states()  # (L, m, d)
        weight = model.get_input_embeddings().weight
        dummy = torch.zeros(1, P.shape[1], P.shape[2], dtype=weight.dtype, device=weight.device)
        keys, values = capture_kv(model, inputs_embeds=dummy, layer_inputs=P[None].to(weight.dtype))
        return self._kv((k[0] for k in keys), (v[0] for v in values), fingerprint)

    def folded_state(self) -> dict[str, torch.Tensor]:
        out = {"prefix": self.states().detach().float().contiguous()} if self.has_hidden else {}
        return out | prefix_seq2seq.cross_state(self)

    @property
    def has_hidden(self) -> bool:
        """Whether any layer gets a hidden-state prefix (not so for an encoder-decoder adapter on "cross" alone)."""
        return self.prefix is not None or self.reparam is not None

    @classmethod
    def expected_shapes(cls, config, geometry) -> dict[str, tuple[int, ...]]:
        if geometry.sites:
            return prefix_seq2seq.expected_shapes(config, geometry)
        return {"prefix": (geometry.num_layers, config.num_virtual_tokens, geometry.hidden_size)}

    @classmethod
    def from_folded(cls, config, geometry, tensors):
        config = config.replace(reparam_hidden=None)
        if geometry.sites:
            hidden = tensors["prefix"].float() if "prefix" in tensors else None
            return cls(config, geometry, prefix=hidden, cross=prefix_seq2seq.cross_from(tensors))
        return cls(config, geometry, prefix=tensors["prefix"].float())

    @classmethod
    def tensor_ranks(cls) -> dict[str, int]:
        return {"prefix": 3}

    @classmethod
    def layout_problem(cls, tensors: dict[str, torch.Tensor]) -> str | None:
        if any(name.startswith("cross_") for name in tensors):  # an encoder-decoder adapter with a cross site
            return prefix_seq2seq.layout_problem(tensors)
        return super().layout_problem(tensors)

    @classmethod
    def layer_views(cls, tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        hidden = [t.flatten() for t in tensors["prefix"]] if "prefix" in tensors else []
        return hidden + prefix_seq2seq.cross_views(tensors)

    @classmethod
    def width_problem(cls, tensors: dict[str, torch.Tensor], geometry: ModelGeometry) -> str | None:
        if "prefix" not in tensors:
            return None
        return hidden_checks.hidden_width_problem("prefix", tensors["prefix"], geometry)

    @classmethod
    def diagnose(cls, tensors: dict[str, torch.Tensor], model: nn.Module) -> list[Observation]:
        if "prefix" not in tensors or is_encoder_decoder(model):  # the check runs a causal LM's layers
            return []
        return hidden_checks.embedding_only(tensors["prefix"], model)

    def reference_logits(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        return reference_logits(
            model,
            input_ids,
            attention_mask,
            layer_prefixes=self.states(),
            position_convention=self.config.position_convention,
            head_params=self.head_params(),
        )

    def site_prefixes(self) -> SitePrefixes:
        """Encoder-decoders: this adapter's prefixes per site, for the literal reference path."""
        return prefix_seq2seq.site_prefixes(self)
