"""The reference path for encoders: DESIGN.md §1 written out literally, layer by layer, with bidirectional
attention. The executable specification of the BERT family (BERT, RoBERTa, ModernBERT).

Method "prefix": layer l runs on X^l = [P^l ; H^{l-1}] and only the last n outputs go on. Method "kv": layer
l's attention sees [K^l ; K] and [V^l ; V]. Method "prompt": the soft prompt goes in front of the token
embeddings (through the embedding module, at positions 0..m-1), flows through every layer like tokens, and
its positions are dropped after the last layer, before the task head. Every real token attends to every
prefix position and to every unpadded real token; on ModernBERT's sliding-window layers the window is
measured in sequence slots and per-layer prefixes are always within it.

Positions: "shifted", real token j at m + j; "unshifted", real token j at j (no prefix position exists); both
from the family's own first position (RoBERTa: padding_idx + 1), j counting real tokens only.

Deliberately slow and independent of the fast path: no compilation, no capture, no prefix-aware attention; the
layers run with the family's eager attention (`core.hf.literal_attention`) and an explicit (m+n) mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prefixtune.core.hf.encoder import EncoderParts, encoder_parts
from prefixtune.core.hf.literal_attention import layer_kv, literal_attention
from prefixtune.core.hf.task_head import encoder_output, run_head


@torch.no_grad()
def reference_encoder_output(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    layer_prefixes: torch.Tensor | None = None,
    layer_kv_prefixes: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]] | None = None,
    prompt: torch.Tensor | None = None,
    position_convention: str = "shifted",
    head_params: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The model's output (task-head logits, or the last hidden state of a bare encoder), computed literally.

    Args:
        model: a supported encoder (`AutoModel`, `...ForSequenceClassification`, `...ForTokenClassification`).
        input_ids: (B, n). attention_mask: (B, n), 1 = real token (right or left padding).
        layer_prefixes: (L, m, d), method "prefix". layer_kv_prefixes: per-layer (H_kv, m, D) keys and values,
            method "kv". prompt: (m, d), method "prompt". Exactly one.
        position_convention: "shifted" or "unshifted".
        head_params: the adapter's own task-head weights (None: the model's); "mean_head.weight" and
            "mean_head.bias" (`head_pooling="mean"`): a linear layer on the mean of the real tokens' last states.

    Returns:
        Logits ((B, C) or (B, n, C)), or (B, n, d) for a bare encoder (values at padding unspecified).
    """
    given = [x is not None for x in (layer_prefixes, layer_kv_prefixes, prompt)]
    if sum(given) != 1:
        raise ValueError("give exactly one of layer_prefixes, layer_kv_prefixes or prompt")
    parts = encoder_parts(model)
    B = input_ids.shape[0]
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    if layer_prefixes is not None:
        m = layer_prefixes.shape[1]
    elif prompt is not None:
        m = prompt.shape[0]
    else:
        m = layer_kv_prefixes[0][0].shape[1]
    shift = m if position_convention == "shifted" else 0
    real_pos = (mask.long().cumsum(-1) - 1).clamp(min=0) + shift + parts.position_offset  # (B, n)
    prefix_pos = torch.arange(m, device=input_ids.device)[None].expand(B, m) + parts.position_offset
    dtype = model.get_input_embeddings().weight.dtype
    ones = torch.ones(B, m, dtype=mask.dtype, device=mask.device)

    if prompt is not None:
        words = model.get_input_embeddings()(input_ids)  # (B, n, d)
        embeds = torch.cat([prompt.to(dtype)[None].expand(B, -1, -1), words], dim=1)  # (B, m+n, d)
        h = parts.embed(None, embeds, torch.cat([prefix_pos, real_pos], 1))
    else:
        h = parts.embed(input_ids, None, real_pos)  # (B, n, d): H^0
    with literal_attention(model):
        for idx, layer in enumerate(parts.layers):
            h = _run_layer(
                parts, idx, layer, h, mask, ones, prefix_pos, real_pos, dtype, layer_prefixes, layer_kv_prefixes
            )
    h = parts.final_norm(h)
    if prompt is not None:
        h = h[:, m:]  # the prompt positions are dropped before the head
    if head_params is not None and "mean_head.weight" in head_params:  # an own mean-pooling head (head_pooling)
        real = mask.to(h.dtype)[..., None]  # (B, n, 1): the real tokens; prompt slots are already dropped
        pooled = (h * real).sum(1) / real.sum(1)  # (B, d)
        return pooled @ head_params["mean_head.weight"].to(h.dtype).T + head_params["mean_head.bias"].to(h.dtype)
    out = run_head(model, encoder_output(model, h), head_params, input_ids=input_ids, attention_mask=mask)
    return out.last_hidden_state if model.base_model is model else out.logits


def _run_layer(
    parts: EncoderParts,
    idx: int,
    layer: nn.Module,
    h: torch.Tensor,
    mask: torch.Tensor,
    ones: torch.Tensor,
    prefix_pos: torch.Tensor,
    real_pos: torch.Tensor,
    dtype: torch.dtype,
    layer_prefixes: torch.Tensor | None,
    kv: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]] | None,
) -> torch.Tensor:
    """One layer of the literal run: (B, S, d) -> (B, S, d), S = n (or m + n for a flowing prompt)."""
    B, m = ones.shape
    window = parts.sliding_window(idx)
    if layer_prefixes is not None:  # [P^l ; H]: the prefix is part of this layer's sequence only
        x = torch.cat([layer_prefixes[idx].to(dtype)[None].expand(B, -1, -1), h], dim=1)
        positions = torch.cat([prefix_pos, real_pos], dim=1)
        attn = _mask(torch.cat([ones, mask], 1), dtype, window, exempt=m)
    elif kv is not None:  # [K^l ; K], [V^l ; V]
        x, positions = h, real_pos
        attn = _mask(torch.cat([ones, mask], 1), dtype, window, exempt=m, queries=h.shape[1])
    else:  # the prompt flows: its slots are ordinary sequence positions
        x, positions = h, torch.cat([prefix_pos, real_pos], dim=1)
        attn = _mask(torch.cat([ones, mask], 1), dtype, window, exempt=0)
    rope = parts.rotary(x, positions, idx)
    keys = None if kv is None else kv[0][idx].to(dtype)[None].expand(B, -1, -1, -1)
    values = None if kv is None else kv[1][idx].to(dtype)[None].expand(B, -1, -1, -1)
    with layer_kv(keys, values):
        out = layer(x, attention_mask=attn, position_embeddings=rope) if rope is not None else layer(x, attn)
    out = out[0] if isinstance(out, tuple) else out
    return out[:, m:] if layer_prefixes is not None else out  # keep the last n: prefix outputs are discarded


def _mask(
    key_valid: torch.Tensor, dtype: torch.dtype, window: int | None, *, exempt: int, queries: int | None = None
) -> torch.Tensor:
    """Additive (B, 1, Q, S) bidirectional mask: padding keys masked; with a sliding window, keys farther than
    `window` slots masked, except the first `exempt` (per-layer prefix) keys. Queries are the last Q slots."""
    B, S = key_valid.shape
    Q = S if queries is None else queries
    allowed = key_valid.bool()[:, None, None, :].expand(B, 1, Q, S)  # (B, 1, Q, S)
    if window is not None:
        q = torch.arange(S - Q, S, device=key_valid.device)[:, None]
        k = torch.arange(S, device=key_valid.device)[None, :]
        near = ((q - k).abs() <= window) | (k < exempt)  # (Q, S)
        allowed = allowed & near
    return torch.zeros(allowed.shape, dtype=dtype, device=key_valid.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )
