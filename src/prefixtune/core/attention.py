"""Prefix-aware attention: the math of the one injection mechanism.

Every layer's attention gets, per batch row, the row's compiled prefix keys/values (or none) in front of the
real tokens' keys/values:

    out_i = softmax(q_i [K_prefix ; K]^T * scale + mask) [V_prefix ; V]

Two ways to compute it, chosen by the query length and who owns the cache:
- many queries (training, evaluation, prefill): concatenate the prefix to the keys/values once and call the
  model's own attention implementation (sdpa or eager) with the mask widened by the prefix columns;
- one query (a decoding step), or any step over an engine-owned cache (serving, chunked prefill): score the
  prefix and the cache separately and take one softmax over both, so the growing cache is never copied to
  attach the prefix (the DESIGN.md §5 pitfall with `DynamicCache`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prefixtune.core.prefix_batch import PrefixBatch, current_prefix_batch

if TYPE_CHECKING:
    from prefixtune.core.capture import KVCapture

AttentionFn = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]

# Attention options the split (decoding) path does not implement; with them it falls back to concatenation.
_SPLIT_UNSUPPORTED = ("softcap", "s_aux", "sinks", "position_bias")


def layer_index(module: nn.Module) -> int:
    """The decoder layer an attention module belongs to (set by `core.hf.attention.install`)."""
    idx = getattr(module, "_prefixtune_layer_idx", None)
    if idx is None:
        idx = getattr(module, "layer_idx", None)
    if idx is None:
        raise RuntimeError(f"{type(module).__name__} has no layer index; was prefixtune installed on the model?")
    return int(idx)


@dataclass(frozen=True, slots=True)
class AttentionContext:
    """What one call of the attention function is for, resolved once from what transformers passed down.

    Attributes:
        layer: the decoder layer of the attention module.
        prefix_batch: the rows' prefixes (a forward kwarg, or bound by `core.prefix_batch.active_prefix_batch`,
            as `generate` needs), or None: the bare model.
        capture: a `core.capture.KVCapture` when compiling (records this layer's keys/values), else None.
    """

    layer: int
    prefix_batch: PrefixBatch | None
    capture: KVCapture | None

    @classmethod
    def resolve(cls, module: nn.Module, kwargs: dict[str, Any]) -> AttentionContext:
        """The context of one call; removes prefixtune's own entries from `kwargs`."""
        capture = kwargs.pop("kv_capture", None)
        batch = kwargs.pop("prefix_batch", None)
        if batch is None and capture is None:
            batch = current_prefix_batch()
        layer = layer_index(module)
        if batch is not None:  # an encoder-decoder's batch holds one PrefixBatch per site (`core.seq2seq_batch`)
            batch, layer = batch.at(layer)
        return cls(layer, batch, capture)


def prefix_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    base_fn: AttentionFn,
    mask_is_additive: bool,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The function registered with transformers' AttentionInterface: resolve the context, then `attend`.

    Args:
        module: the attention module (transformers passes itself).
        query: (B, H_q, T_q, D). key, value: (B, H_kv, T_kv, D), after rotary embedding and cache update.
        attention_mask: transformers' mask for the real tokens (see `attend`).
        base_fn: the model's own attention implementation (sdpa or eager) that does the arithmetic.
        mask_is_additive: whether `base_fn` expects an additive float mask (eager) rather than bool (sdpa).
        **kwargs: the model's forward kwargs, with prefixtune's `prefix_batch` / `kv_capture` among them.

    Returns:
        (attn_output (B, T_q, H_q, D), attention weights or None), as transformers expects.
    """
    context = AttentionContext.resolve(module, kwargs)
    if context.capture is not None:
        context.capture.record(context.layer, key, value)
    return attend(
        context, module, query, key, value, attention_mask, base_fn=base_fn, mask_is_additive=mask_is_additive, **kwargs
    )


def attend(
    context: AttentionContext,
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    base_fn: AttentionFn,
    mask_is_additive: bool,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention over [row's prefix ; keys] for a resolved context; looks nothing up itself.

    Args:
        context: the resolved call (`AttentionContext.resolve`).
        attention_mask: (B|1, 1, T_q, T_kv) bool (sdpa) or additive float (eager), or None for a plain causal
            mask. Other arguments as `prefix_attention`.

    Returns:
        (attn_output (B, T_q, H_q, D), attention weights or None).
    """
    prefix_batch, layer = context.prefix_batch, context.layer
    if prefix_batch is not None and prefix_batch.store is not None:
        key, value, attention_mask = prefix_batch.store.update(layer, key, value)  # a bool mask
        if prefix_batch.is_empty and mask_is_additive:
            attention_mask = _to_additive(attention_mask, query.dtype)
    if prefix_batch is None or prefix_batch.is_empty:
        return base_fn(module, query, key, value, attention_mask, **kwargs)

    B, _, T_q, _ = query.shape
    T_kv = key.shape[2]
    pk, pv, pvalid = prefix_batch.layer(layer, B)  # (b, H_kv, M, D), (b, H_kv, M, D), (B, M)
    # No mask means causal for a decoder, everything for an encoder or cross-attention (T5, BART set is_causal).
    causal = bool(getattr(module, "is_causal", True))
    if kwargs.get("position_bias") is not None:
        # T5's relative position bias covers the real keys only: the prefix keys get none (issue 12).
        bias = kwargs["position_bias"]  # (1|B, H, T_q, T_kv)
        kwargs["position_bias"] = torch.cat([bias.new_zeros(*bias.shape[:-1], pk.shape[2]), bias], dim=-1)

    def widened() -> torch.Tensor:
        """The real tokens' mask widened by the row's prefix columns: bool (B, 1, T_q, M + T_kv)."""
        prefix_allowed = pvalid[:, None, None, :].expand(B, 1, T_q, pvalid.shape[1])  # (B, 1, T_q, M)
        ctx_allowed = _allowed(attention_mask, B, T_q, T_kv, query.device, causal)  # (B, 1, T_q, T_kv)
        return torch.cat([prefix_allowed, ctx_allowed], dim=-1)

    # One query (decoding) or an engine-owned cache (chunked prefill): never copy the cache to attach the prefix.
    uses_store = prefix_batch.store is not None
    if (T_q == 1 or uses_store) and not any(kwargs.get(name) is not None for name in _SPLIT_UNSUPPORTED):
        # The split path's additive fp32 bias broadcasts over key/value heads and the query heads of a group.
        bias = prefix_batch.memo(
            ("split", B, T_q, T_kv, causal),
            attention_mask,
            lambda: _to_additive(widened()[:, :, None], torch.float32),  # (B, 1, 1, T_q, M + T_kv)
        )
        return _split_attention(query, key, value, pk, pv, bias, kwargs.get("scaling")), None

    # Every layer of a forward gets the same mask object, so the widened mask is built once per forward.
    mask = prefix_batch.memo(
        ("cat", B, T_q, T_kv, mask_is_additive, query.dtype, causal),
        attention_mask,
        lambda: _to_additive(widened(), query.dtype) if mask_is_additive else widened(),
    )
    key = torch.cat([pk.expand(B, -1, -1, -1).to(key.dtype), key], dim=2)  # (B, H_kv, M + T_kv, D)
    value = torch.cat([pv.expand(B, -1, -1, -1).to(value.dtype), value], dim=2)
    return base_fn(module, query, key, value, mask, **kwargs)


def _allowed(
    mask: torch.Tensor | None, B: int, T_q: int, T_kv: int, device: torch.device, causal: bool = True
) -> torch.Tensor:
    """transformers' mask (or None: causal, or everything for a bidirectional module) as bool
    (B, 1, T_q, T_kv), True = may attend."""
    if mask is None and not causal:
        return torch.ones(B, 1, T_q, T_kv, dtype=torch.bool, device=device)
    if mask is None:
        q_pos = torch.arange(T_q, device=device)[:, None] + (T_kv - T_q)
        allowed = torch.arange(T_kv, device=device)[None, :] <= q_pos  # (T_q, T_kv)
        return allowed[None, None].expand(B, 1, T_q, T_kv)
    if mask.dtype != torch.bool:
        # transformers' additive masks hold 0 (attend) or the dtype's minimum (masked)
        mask = mask > torch.finfo(mask.dtype).min / 2
    return mask[..., -T_kv:].expand(B, 1, T_q, T_kv)


def _to_additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool mask -> additive float mask (0 where allowed, dtype minimum elsewhere)."""
    if allowed.dtype != torch.bool:
        return allowed
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return out.masked_fill_(~allowed, torch.finfo(dtype).min)


def _split_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    pk: torch.Tensor,
    pv: torch.Tensor,
    bias: torch.Tensor,
    scaling: float | None,
) -> torch.Tensor:
    """Attention over [prefix ; context] without concatenating keys or values (decoding steps).

    Only the scores are joined (O(T_kv) numbers per query, not O(T_kv * D)): one softmax over [prefix scores ;
    context scores], then the probabilities are split again to weight the prefix values and the cache values.
    Query heads are grouped by the key/value head they share (grouped-query attention), so neither the prefix
    nor the cache is repeated per query head.

    Args:
        query: (B, H_q, T_q, D). key, value: (B, H_kv, T_kv, D). pk, pv: (b, H_kv, M, D), b in {1, B}.
        bias: additive fp32 (B, 1, 1, T_q, M + T_kv), 0 where a query may attend and the fp32 minimum elsewhere.
        scaling: the model's attention scale (default D ** -0.5).

    Returns:
        (B, T_q, H_q, D).
    """
    B, H_q, T_q, D = query.shape
    H_kv, T_kv, M = key.shape[1], key.shape[2], pk.shape[2]
    scale = scaling if scaling is not None else D**-0.5
    q = query.reshape(B, H_kv, -1, D)  # (B, H_kv, G * T_q, D); head h = kv_head * G + g, as transformers' repeat_kv
    scores = torch.cat([_with_prefix(q, pk.to(q.dtype).transpose(-1, -2)), torch.matmul(q, key.transpose(-1, -2))], -1)
    scores = scores.float().view(B, H_kv, H_q // H_kv, T_q, -1)  # (B, H_kv, G, T_q, M + T_kv): the bias broadcasts
    probs = torch.softmax(torch.add(bias, scores, alpha=scale), dim=-1).to(value.dtype).view(B, H_kv, -1, M + T_kv)
    out = _with_prefix(probs[..., :M], pv.to(value.dtype)) + torch.matmul(probs[..., M:], value)  # (B, H_kv, GT, D)
    return out.reshape(B, H_q, T_q, D).transpose(1, 2)  # (B, T_q, H_q, D)


def _with_prefix(x: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """x (B, H_kv, R, K) @ prefix (b, H_kv, K, N) -> (B, H_kv, R, N); b == 1 is shared by every row.

    A shared prefix is multiplied as one (H_kv, B*R, K) @ (H_kv, K, N) product instead of being broadcast,
    which would copy it once per row.
    """
    if prefix.shape[0] == x.shape[0]:
        return torch.matmul(x, prefix)
    B, H, R, K = x.shape
    folded = x.transpose(0, 1).reshape(H, B * R, K)  # (H_kv, B*R, K)
    return torch.matmul(folded, prefix[0]).view(H, B, R, -1).transpose(0, 1)
