"""Offline generation with per-row prefixes.

transformers' `generate` keeps its own cache of the real tokens; each row's compiled prefix is attached
inside attention (never written into the cache, never recomputed per step). The prefix batch is bound to the
running context because `generate` refuses forward kwargs it does not know. Position ids start at the row's m
and `generate` continues them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from prefixtune.core import is_encoder_decoder
from prefixtune.core.inject import ensure_installed, prepare_prefix_inputs
from prefixtune.core.prefix_batch import active_prefix_batch
from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.core.seq2seq_batch import build_site_batch


@torch.no_grad()
def generate_with_prefixes(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    prefix_kvs: Sequence[PrefixKV | None],
    **generate_kwargs: Any,
) -> torch.Tensor:
    """Run `model.generate` where row r attends to `prefix_kvs[r]`.

    Args:
        model: a transformers causal LM.
        input_ids: (B, T), left-padded (an encoder-decoder's encoder input: either padding side).
        attention_mask: (B, T) or None (all ones).
        prefix_kvs: one PrefixKV or None per row.
        **generate_kwargs: anything `generate` takes (max_new_tokens, do_sample, num_beams, ...).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if is_encoder_decoder(model):  # the prompt is the encoder input; positions are the model's own
        ensure_installed(model)
        with active_prefix_batch(build_site_batch(model, prefix_kvs)):
            return model.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)
    batch, position_ids = prepare_prefix_inputs(model, prefix_kvs, attention_mask)
    generate_kwargs.setdefault("pad_token_id", _pad_id(model))
    with active_prefix_batch(batch):
        return model.generate(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **generate_kwargs
        )


def _pad_id(model: nn.Module) -> int | None:
    config = getattr(model, "generation_config", None) or model.config
    pad = getattr(config, "pad_token_id", None)
    if pad is None:
        eos = getattr(config, "eos_token_id", None)
        pad = eos[0] if isinstance(eos, list) and eos else eos
    return pad
