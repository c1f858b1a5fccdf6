"""Method "prompt": prompt tuning (Lester et al. 2021), m soft-prompt vectors before the token embeddings.

Unlike "prefix", the prompt enters once, at the embeddings, and its positions flow through every layer like
tokens. With causal attention its keys/values at every layer still do not depend on the input, so it
compiles, like the other methods, to a per-layer key/value prefix: run the frozen model on the prompt alone.
On a bidirectional encoder they do depend on the input (the prompt attends to the tokens): there it compiles
to the prompt vectors themselves (`PrefixKV.prompt_embeddings`), which enter in front of the token embeddings
and are dropped after the last layer, before the task head.
"""

from __future__ import annotations

import torch
from torch import nn

from prefixtune.config import PrefixConfig
from prefixtune.core import has_bidirectional_attention
from prefixtune.core.capture import capture_kv
from prefixtune.core.geometry import ModelGeometry
from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.core.reference import reference_logits
from prefixtune.errors import ConfigError
from prefixtune.parametrizations.base import PREFIX_TUNING, PROMPT_TUNING, Parametrization, PeftTensors
from prefixtune.parametrizations.hidden_checks import hidden_width_problem
from prefixtune.parametrizations.init import embedding_scale, generator, init_token_ids, random_normal
from prefixtune.parametrizations.registry import register

# On an encoder-decoder the prompt would be encoder input: the bidirectional encoder lets it attend to the
# input, so its keys/values depend on the input and it cannot compile to a fixed per-layer prefix (issue 12).
_SEQ2SEQ = (
    "method 'prompt' is not built for encoder-decoders: a soft prompt in front of the encoder input sees the "
    "input (bidirectional attention), so it does not compile to per-layer keys/values; use method 'prefix' or "
    "'kv' (sites=encoder for an encoder-side prefix)"
)


@register
class SoftPrompt(Parametrization):
    """Trainable prompt embeddings: m x d numbers."""

    method = "prompt"
    trains = "a soft prompt, m x d vectors prepended once to the token embeddings"
    injected = "flows through every layer like ordinary tokens; compiled to per-layer keys/values for serving"
    supports_reparam = False
    # PROMPT_TUNING by default: smaller, and what users of prompts expect.
    peft_export_types = (PROMPT_TUNING, PREFIX_TUNING)
    peft_import_type = PROMPT_TUNING
    encoder_decoder_problem = _SEQ2SEQ

    def __init__(self, config: PrefixConfig, geometry: ModelGeometry, prompt: torch.Tensor) -> None:
        super().__init__(config, geometry)
        self.prompt = nn.Parameter(prompt)  # (m, d)

    @classmethod
    def create(cls, config, model, geometry, tokenizer):
        if geometry.sites:
            raise ConfigError(_SEQ2SEQ)
        m, d = config.num_virtual_tokens, geometry.hidden_size
        like = torch.empty(0, dtype=torch.float32, device=model.get_input_embeddings().weight.device)
        rng = generator(config)
        if config.init == "random":
            return cls(config, geometry, random_normal((m, d), embedding_scale(model), rng, like))
        ids = init_token_ids(config, model, tokenizer, rng)
        with torch.no_grad():
            start = model.get_input_embeddings()(ids)[0].float()
        return cls(config, geometry, start)

    def compile(self, model: nn.Module, fingerprint: dict | None = None) -> PrefixKV:
        weight = model.get_input_embeddings().weight
        if has_bidirectional_attention(model):
            return PrefixKV(
                keys=(),
                values=(),
                method=self.method,
                position_convention=self.config.position_convention,
                fingerprint=fingerprint,
                prompt_embeddings=self.prompt.to(weight.dtype),
            )
        keys, values = capture_kv(model, inputs_embeds=self.prompt[None].to(weight.dtype))
        return self._kv((k[0] for k in keys), (v[0] for v in values), fingerprint)

    def folded_state(self) -> dict[str, torch.Tensor]:
        return {"prompt": self.prompt.detach().float().contiguous()}

    @classmethod
    def expected_shapes(cls, config, geometry) -> dict[str, tuple[int, ...]]:
        return {"prompt": (config.num_virtual_tokens, geometry.hidden_size)}

    @classmethod
    def from_folded(cls, config, geometry, tensors):
        if geometry.sites:
            raise ConfigError(_SEQ2SEQ)
        return cls(config, geometry, tensors["prompt"].float())

    @classmethod
    def config_problems(cls, config: PrefixConfig) -> list[str]:
        out = []
        if config.reparam_hidden is not None:
            out.append("reparam_hidden is for methods 'prefix' and 'kv'; prompt tuning trains the prompt directly")
        if config.position_convention == "unshifted":
            out.append(
                "position_convention='unshifted' is for the per-layer methods 'prefix' and 'kv': a soft prompt "
                "enters at the token embeddings, where every vector gets a position; use 'shifted'"
            )
        return out

    @classmethod
    def tensor_ranks(cls) -> dict[str, int]:
        return {"prompt": 2}

    @classmethod
    def width_problem(cls, tensors: dict[str, torch.Tensor], geometry: ModelGeometry) -> str | None:
        return hidden_width_problem("prompt", tensors["prompt"], geometry)

    def peft_soft_prompt(self) -> torch.Tensor:
        return self.folded_state()["prompt"]

    @classmethod
    def tensors_from_peft(cls, adapter: PeftTensors) -> dict[str, torch.Tensor]:
        return {"prompt": adapter.embeddings}

    def reference_logits(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        return reference_logits(
            model,
            input_ids,
            attention_mask,
            prompt=self.prompt,
            position_convention=self.config.position_convention,
            head_params=self.head_params(),
        )
