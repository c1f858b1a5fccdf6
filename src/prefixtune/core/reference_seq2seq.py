"""The reference path for encoder-decoders (T5, BART): the method written out literally, layer by layer.

Encoder and decoder self-attention, with a hidden-state prefix P^l: layer l runs on [P^l ; H^{l-1}] and only
the last n outputs go on. With a key/value prefix (method "kv", and every cross-attention prefix): the
layer's own attention sees [K^l ; K] and [V^l ; V], because the layer is handed a transformers cache that
already holds K^l, V^l, so its own code does the concatenation (for cross-attention: in front of the keys and
values it computes from the encoder outputs).

Conventions it fixes (and the fast path must match): real tokens keep their own positions (BART's learned
positions 0..n-1, T5's relative bias among real tokens); prefix keys carry no position: T5 gives them no
relative bias. Every real token attends to every prefix key, in the encoder, the decoder and the
cross-attention.

Deliberately slow and independent of the fast path: no compilation, no prefix-aware attention; explicit
(B, 1, S_q, S_k) additive masks and explicit T5 position biases. Used by tests and for teaching.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPastAndCrossAttentions

from prefixtune.core.hf.seq2seq import attention_slots, decoder_layers, decoder_stack, encoder_layers

_LOCK = threading.Lock()


@dataclass(frozen=True)
class SitePrefixes:
    """An adapter's prefixes per site, as the reference path takes them.

    Attributes:
        hidden: site ("encoder" | "decoder") -> (L_site, m, d) hidden-state prefixes P^l.
        kv: site ("encoder" | "decoder" | "cross") -> (keys, values), per layer (H_kv, m, D).
    """

    hidden: dict[str, torch.Tensor] = field(default_factory=dict)
    kv: dict[str, tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]] = field(default_factory=dict)


class _Stop(Exception):
    def __init__(self, hidden: torch.Tensor) -> None:
        self.hidden = hidden


def _first_layer_input(stack: nn.Module, layers: nn.ModuleList, **inputs: Any) -> torch.Tensor:
    """H^0 of a stack: what its first layer receives (embeddings, positions and embedding norm applied by
    the stack's own code)."""

    def hook(module, args, kwargs):
        raise _Stop(args[0] if args else kwargs["hidden_states"])

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        stack(**inputs, use_cache=False)
    except _Stop as stop:
        return stop.hidden
    finally:
        handle.remove()
    raise RuntimeError("the stack never called its first layer")


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _mask(query_valid: torch.Tensor, key_valid: torch.Tensor, m_kv: int, causal: bool) -> torch.Tensor:
    """Allowed (B, 1, S, m_kv + S') as bool: `m_kv` cached prefix keys, then the layer's own keys.

    Every query sees the cached prefix keys and the valid keys (causally for a decoder: key i <= query i);
    a padding query also sees its own position, so that no row is empty.
    """
    B, S = query_valid.shape
    S_k = key_valid.shape[1]
    allowed = key_valid.bool()[:, None, None, :].expand(B, 1, S, S_k)
    if causal:
        allowed = allowed & torch.ones(S, S_k, dtype=torch.bool, device=key_valid.device).tril()
    if S_k == S:
        allowed = allowed | torch.eye(S, dtype=torch.bool, device=key_valid.device)
    prefix = torch.ones(B, 1, S, m_kv, dtype=torch.bool, device=key_valid.device)
    return torch.cat([prefix, allowed], dim=-1)


def _relative_bias(module: nn.Module, n: int, S: int, m_h: int, m_kv: int) -> torch.Tensor:
    """T5: (1, H, S, m_kv + S) with the model's relative bias among the n real tokens, zero for prefix keys."""
    H = module.relative_attention_bias.weight.shape[1]
    out = torch.zeros(1, H, S, m_kv + S, dtype=module.relative_attention_bias.weight.dtype)
    out = out.to(module.relative_attention_bias.weight.device)
    out[:, :, m_h:, m_kv + m_h :] = module.compute_bias(n, n)
    return out


def _cache_name(fn: Any) -> str:
    return "cache" if "cache" in inspect.signature(fn).parameters else "past_key_values"


def _prefilled(layer_idx: int, kv: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]] | None, B: int):
    """A DynamicCache holding layer `layer_idx`'s prefix keys/values (batch B), or an empty one."""
    cache = DynamicCache()
    if kv is not None:
        k, v = kv[0][layer_idx], kv[1][layer_idx]
        cache.update(k[None].expand(B, -1, -1, -1).contiguous(), v[None].expand(B, -1, -1, -1).contiguous(), layer_idx)
    return cache


def _run_layer(layer: nn.Module, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    out = layer(x, **kwargs)
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def reference_seq2seq_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    decoder_input_ids: torch.Tensor,
    decoder_attention_mask: torch.Tensor | None,
    prefixes: SitePrefixes,
) -> torch.Tensor:
    """Decoder logits of an encoder-decoder with per-site prefixes, computed literally.

    Args:
        model: a T5 or BART conditional-generation model in eval mode (sdpa or eager attention).
        input_ids: (B, n_enc). attention_mask: (B, n_enc), 1 = real token.
        decoder_input_ids: (B, n_dec). decoder_attention_mask: (B, n_dec) or None.
        prefixes: the adapter's prefixes per site (`Parametrization.site_prefixes`).

    Returns:
        (B, n_dec, V) logits (values at padding positions are unspecified).
    """
    enc_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    dec_mask = torch.ones_like(decoder_input_ids) if decoder_attention_mask is None else decoder_attention_mask
    dtype = model.get_input_embeddings().weight.dtype
    encoder, decoder = model.get_encoder(), decoder_stack(model)
    enc_layers, dec_layers = encoder_layers(model), decoder_layers(model)
    cache_arg = _cache_name(attention_slots(model)[0][2].forward)

    h = _first_layer_input(encoder, enc_layers, input_ids=input_ids, attention_mask=enc_mask)
    bias = _bias_owner(enc_layers)
    for idx, layer in enumerate(enc_layers):
        h = _self_layer(layer, idx, h, enc_mask, prefixes, cache_arg, dtype, bias)
    h_enc = _final_norm(encoder)(h)

    dummy = torch.zeros_like(h_enc)
    h = _first_layer_input(
        decoder, dec_layers, input_ids=decoder_input_ids, encoder_hidden_states=dummy, encoder_attention_mask=enc_mask
    )
    bias = _bias_owner(dec_layers)
    for idx, layer in enumerate(dec_layers):
        h = _decoder_layer(layer, idx, h, dec_mask, h_enc, enc_mask, prefixes, cache_arg, dtype, bias)
    return _logits(model, _final_norm(decoder)(h), h_enc, enc_mask, decoder_input_ids)


def _prefix_parts(prefixes: SitePrefixes, site: str, idx: int, x: torch.Tensor):
    """(layer input with P^l in front, m_h, cached kv for the site or None, m_kv)."""
    B = x.shape[0]
    P = prefixes.hidden.get(site)
    m_h = 0 if P is None else P.shape[1]
    if P is not None:
        x = torch.cat([P[idx].to(x.dtype)[None].expand(B, -1, -1), x], dim=1)
    kv = prefixes.kv.get(site)
    kv = None if kv is None else ([k.to(x.dtype) for k in kv[0]], [v.to(x.dtype) for v in kv[1]])
    m_kv = 0 if kv is None else kv[0][idx].shape[1]
    return x, m_h, kv, m_kv


def _self_layer(layer, idx, h, mask, prefixes, cache_arg, dtype, bias):
    """An encoder layer on [P^l ; H] with the site's cached prefix keys; keeps the last n outputs."""
    n = h.shape[1]
    x, m_h, kv, m_kv = _prefix_parts(prefixes, "encoder", idx, h)
    valid = torch.cat([torch.ones(h.shape[0], m_h, dtype=mask.dtype, device=mask.device), mask], dim=1)
    kwargs: dict[str, Any] = {"attention_mask": _additive(_mask(valid, valid, m_kv, causal=False), dtype)}
    kwargs[cache_arg] = _prefilled(idx, kv, h.shape[0])
    if bias is not None:
        kwargs["position_bias"] = _relative_bias(bias, n, x.shape[1], m_h, m_kv)
    return _run_layer(layer, x, **kwargs)[:, m_h:]


def _decoder_layer(layer, idx, h, mask, h_enc, enc_mask, prefixes, cache_arg, dtype, bias):
    """A decoder layer: self-attention as `_self_layer` (causal), cross-attention over [K_cross ; K(encoder)]."""
    n, B = h.shape[1], h.shape[0]
    x, m_h, kv, m_kv = _prefix_parts(prefixes, "decoder", idx, h)
    valid = torch.cat([torch.ones(B, m_h, dtype=mask.dtype, device=mask.device), mask], dim=1)
    cross = prefixes.kv.get("cross")
    cross = None if cross is None else ([k.to(x.dtype) for k in cross[0]], [v.to(x.dtype) for v in cross[1]])
    m_c = 0 if cross is None else cross[0][idx].shape[1]
    cache = EncoderDecoderCache(_prefilled(idx, kv, B), _prefilled(idx, cross, B))
    for key in cache.is_updated:  # the cross cache holds only the prefix: the layer must still add K(encoder)
        cache.is_updated[key] = False
    self_mask = _mask(valid, valid, m_kv, causal=True)
    enc_valid = enc_mask.bool()[:, None, None, :].expand(B, 1, x.shape[1], enc_mask.shape[1])
    cross_mask = torch.cat([torch.ones(B, 1, x.shape[1], m_c, dtype=torch.bool, device=h.device), enc_valid], -1)
    kwargs: dict[str, Any] = {
        "attention_mask": _additive(self_mask, dtype),
        "encoder_hidden_states": h_enc,
        "encoder_attention_mask": _additive(cross_mask, dtype),
        cache_arg: cache,
    }
    if bias is not None:
        kwargs["position_bias"] = _relative_bias(bias, n, x.shape[1], m_h, m_kv)
    return _run_layer(layer, x, **kwargs)[:, m_h:]


def _bias_owner(layers: nn.ModuleList) -> nn.Module | None:
    """T5: the attention module holding the stack's relative position bias (shared by its layers); None
    for a family without one (BART)."""
    return next((m for m in layers.modules() if getattr(m, "has_relative_attention_bias", False)), None)


def _final_norm(stack: nn.Module) -> nn.Module:
    """The stack's last norm (T5's final_layer_norm, mBART's layer_norm), or identity (BART has none)."""
    norm = getattr(stack, "final_layer_norm", None) or getattr(stack, "layer_norm", None)
    return norm if norm is not None else nn.Identity()


def _logits(model, h_dec, h_enc, enc_mask, decoder_input_ids) -> torch.Tensor:
    """The model's own head over final decoder states: its forward, with the decoder stack standing in."""
    decoder = decoder_stack(model)

    def stand_in(*args: Any, **kwargs: Any) -> BaseModelOutputWithPastAndCrossAttentions:
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=h_dec)

    with _LOCK:
        decoder.forward = stand_in  # an instance attribute: the class's forward is untouched
        try:
            out = model(
                encoder_outputs=BaseModelOutput(last_hidden_state=h_enc),
                attention_mask=enc_mask,
                decoder_input_ids=decoder_input_ids,
                use_cache=False,
            )
        finally:
            del decoder.forward
    return out.logits
