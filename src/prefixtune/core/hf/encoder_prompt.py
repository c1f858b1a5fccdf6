"""Soft prompts on an encoder: in front of the token embeddings, through every layer, dropped before the head.

On a bidirectional encoder a prompt's keys/values depend on the input, so it cannot be compiled to a
per-layer prefix (`core.prefix_kv`). It enters the model instead, through two hooks that `install` puts on a
supported encoder and `uninstall` removes; both do nothing unless the forward's `prefix_batch` carries prompts:
- a pre-hook on the bare encoder (`BertModel`, ...) puts each row's prompt (right-aligned in M_p slots) in
  front of the token embeddings and widens the attention mask, position ids and token type ids to match;
- a hook on the last layer drops the M_p prompt slots from its output, so that whatever reads the encoder's
  output (BERT's pooler at position 0, RoBERTa's head at <s>, ModernBERT's final norm and mean pooling over
  the caller's mask, token taggers) sees exactly the real tokens, as without a prompt.
The caller's own tensors (labels, the mask a head pools with) keep the real tokens' length.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prefixtune.core.hf.encoder import encoder_position_ids, position_offset


def add_prompt_hooks(model: nn.Module, last_layer: nn.Module) -> list[Any]:
    """Register the two hooks on `model`'s bare encoder and `last_layer`; returns their handles."""
    base = model.base_model
    offset = position_offset(model)
    return [
        base.register_forward_pre_hook(_prepend_prompts(offset), with_kwargs=True),
        last_layer.register_forward_hook(_drop_prompt_slots, with_kwargs=True),
    ]


def _prepend_prompts(offset: int):
    def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]):
        batch = kwargs.get("prefix_batch")
        if batch is None or not batch.has_prompts:
            return None
        kwargs = dict(kwargs)
        ids = args[0] if args else kwargs.get("input_ids")
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            embeds = module.get_input_embeddings()(ids)  # (B, n, d)
        B, n = embeds.shape[:2]
        prompts, slots = batch.prompts, batch.prompt_valid  # (B, M_p, d), (B, M_p)
        M = slots.shape[1]
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones(B, n, dtype=torch.long, device=embeds.device)
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = encoder_position_ids(module, mask, batch.position_shifts, offset)
        # Slot s of a row with m_r prompt vectors holds prompt vector s - (M - m_r): positions offset + 0..m_r-1.
        first = torch.arange(M, device=embeds.device)[None] - M + slots.long().sum(-1, keepdim=True)  # (B, M)
        kwargs["inputs_embeds"] = torch.cat([prompts.to(embeds.dtype).expand(B, -1, -1), embeds], dim=1)
        kwargs["input_ids"] = None
        kwargs["attention_mask"] = torch.cat([slots.to(mask.dtype), mask], dim=1)  # (B, M + n)
        kwargs["position_ids"] = torch.cat([first.clamp(min=0) + offset, positions.expand(B, -1)], dim=1)
        types = kwargs.get("token_type_ids")
        if types is not None:
            kwargs["token_type_ids"] = torch.cat([types.new_zeros(B, M), types.expand(B, -1)], dim=1)
        return args[1:], kwargs

    return hook


def _drop_prompt_slots(module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
    batch = kwargs.get("prefix_batch")
    if batch is None or not batch.has_prompts:
        return None
    M = batch.prompt_valid.shape[1]
    if isinstance(output, tuple):
        return (output[0][:, M:], *output[1:])
    return output[:, M:]  # (B, n, d)
