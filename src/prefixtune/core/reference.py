"""The reference path: DESIGN.md §1 written out literally, layer by layer. The executable specification.

For method "prefix", layer l gets X^l = [P^l ; H^{l-1}] (m + n positions), runs as usual over all of them,
and only the last n outputs go on: H^l = Layer(X^l)[-n:]. For method "prompt", the soft prompt is put in
front of the token embeddings once and its positions flow through every layer. For method "kv", every
layer's attention sees [K^l ; K] and [V^l ; V]: the model runs once with its own key/value cache already
holding each layer's prefix, so its own attention does the concatenation (`reference_kv_logits`).

Deliberately slow and independent of the fast path: no compilation, no key/value capture, no prefix-aware
attention (the model's own attention implementation runs with an explicit (m+n) x (m+n) mask). It supports
the architectures the tests use: GPT-2 (learned absolute positions) and the Llama family (rotary; Llama,
Qwen2/3, Mistral), read through their public module names; encoders go to `core.reference_encoder`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prefixtune.core.hf.attention import base_implementation
from prefixtune.core.hf.cache import cache_argument, prefilled_cache
from prefixtune.core.hf.encoder import has_bidirectional_attention
from prefixtune.core.hf.family import DecoderParts, decoder_parts
from prefixtune.core.hf.head import output_logits
from prefixtune.core.reference_encoder import reference_encoder_output
from prefixtune.errors import UnsupportedModelError


@torch.no_grad()
def reference_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    layer_prefixes: torch.Tensor | None = None,
    prompt: torch.Tensor | None = None,
    position_convention: str = "shifted",
    head_params: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits of the real tokens, computed literally.

    Args:
        model: a GPT-2 or Llama-family causal LM, or a supported encoder (`core.reference_encoder`).
        input_ids: (B, n). attention_mask: (B, n), 1 = real token (left or right padding).
        layer_prefixes: (L, m, d), method "prefix": P^l for every layer.
        prompt: (m, d), method "prompt": the soft prompt.
        position_convention, head_params: encoders only (see `reference_encoder_output`).

    Returns:
        (B, n, V) logits at the real token positions (values at padding positions are unspecified); an
        encoder's task-head output.
    """
    if (layer_prefixes is None) == (prompt is None):
        raise ValueError("give exactly one of layer_prefixes (method 'prefix') or prompt (method 'prompt')")
    if has_bidirectional_attention(model):
        return reference_encoder_output(
            model,
            input_ids,
            attention_mask,
            layer_prefixes=layer_prefixes,
            prompt=prompt,
            position_convention=position_convention,
            head_params=head_params,
        )
    B, n = input_ids.shape
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    m = layer_prefixes.shape[1] if layer_prefixes is not None else prompt.shape[0]
    family = _family(model)
    dtype = model.get_input_embeddings().weight.dtype

    # Positions: prefix i -> i, real token j -> m + j, j counting real tokens only ("shifted").
    real_pos = (mask.long().cumsum(-1) - 1).clamp(min=0) + m  # (B, n)
    prefix_pos = torch.arange(m, device=input_ids.device)[None].expand(B, m)
    position_ids = torch.cat([prefix_pos, real_pos], dim=1)  # (B, m+n)
    attn = _mask(torch.cat([torch.ones(B, m, dtype=mask.dtype, device=mask.device), mask], 1), dtype)

    tokens = model.get_input_embeddings()(input_ids)  # (B, n, d)
    if prompt is not None:
        h = torch.cat([prompt.to(dtype)[None].expand(B, -1, -1), tokens], dim=1)  # (B, m+n, d)
        h = family.embed_positions(h, position_ids)
    else:
        h = family.embed_positions(tokens, real_pos)  # (B, n, d): H^0
    rope = family.rotary(h, position_ids)
    for idx, layer in enumerate(family.layers):
        x = torch.cat([layer_prefixes[idx].to(dtype)[None].expand(B, -1, -1), h], 1) if prompt is None else h
        out = layer(x, attention_mask=attn, position_ids=position_ids, position_embeddings=rope)
        out = out[0] if isinstance(out, tuple) else out  # (B, m+n, d)
        h = out[:, m:] if prompt is None else out  # keep the last n: prefix outputs are discarded
    h = family.final_norm(h)
    return output_logits(model, h[:, -n:])  # the family's own head (Cohere scales, Gemma 2 caps)


@torch.no_grad()
def reference_kv_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    keys: Sequence[torch.Tensor],
    values: Sequence[torch.Tensor],
    *,
    position_convention: str = "shifted",
    head_params: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits of the real tokens with per-layer keys/values in front of every layer's own, computed literally.

    Args:
        model: a transformers causal LM (any family with a standard cache).
        input_ids: (B, n). attention_mask: (B, n), 1 = real token.
        keys, values: per layer (H_kv, m, D), method "kv".

    Returns:
        (B, n, V) logits (values at padding positions are unspecified); an encoder's task-head output.
    """
    if has_bidirectional_attention(model):
        return reference_encoder_output(
            model,
            input_ids,
            attention_mask,
            layer_kv_prefixes=(keys, values),
            position_convention=position_convention,
            head_params=head_params,
        )
    if base_implementation(model) not in ("sdpa", "eager"):
        raise UnsupportedModelError("the reference path runs with sdpa or eager attention")
    B = input_ids.shape[0]
    m = keys[0].shape[1]
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    dtype = model.get_input_embeddings().weight.dtype
    cache = prefilled_cache(
        model,
        [k.to(dtype)[None].expand(B, -1, -1, -1).contiguous() for k in keys],  # (B, H_kv, m, D)
        [v.to(dtype)[None].expand(B, -1, -1, -1).contiguous() for v in values],
    )
    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0) + m  # "shifted": real token j at m + j
    full_mask = torch.cat([torch.ones(B, m, dtype=mask.dtype, device=mask.device), mask], dim=1)  # (B, m + n)
    out = model(
        input_ids=input_ids,
        attention_mask=full_mask,
        position_ids=position_ids,
        use_cache=True,
        **{cache_argument(model): cache},
    )
    return out.logits


def _mask(key_valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive (B, 1, S, S) causal mask over [prefix ; tokens]; padding keys masked."""
    S = key_valid.shape[1]
    causal = torch.ones(S, S, dtype=torch.bool, device=key_valid.device).tril()
    allowed = causal[None, None] & key_valid.bool()[:, None, None, :]
    allowed = allowed | torch.eye(S, dtype=torch.bool, device=key_valid.device)  # no empty rows at padding
    return torch.zeros(allowed.shape, dtype=dtype, device=key_valid.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


def _family(model: nn.Module) -> DecoderParts:
    if base_implementation(model) not in ("sdpa", "eager"):
        raise UnsupportedModelError("the reference path runs with sdpa or eager attention")
    return decoder_parts(model)
