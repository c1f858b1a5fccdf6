"""The one injection mechanism: run a transformers model with per-row prefixes.

Training, evaluation, `generate` and the serving engine all come through here (DESIGN.md §2). The prefix
reaches each layer's attention as a forward kwarg (`prefix_batch`) that transformers passes down to the
registered attention function (`core.attention.prefix_attention`); positions follow the row's convention
(`core.positions`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from prefixtune.config import POSITION_CONVENTIONS
from prefixtune.core.hf.attention import PREFIX, install
from prefixtune.core.hf.seq2seq import is_encoder_decoder
from prefixtune.core.positions import real_position_ids
from prefixtune.core.prefix_batch import KVStore, PrefixBatch
from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.core.seq2seq_batch import seq2seq_forward

__all__ = [
    "KVStore",
    "PrefixBatch",
    "build_prefix_batch",
    "ensure_installed",
    "prefix_forward",
    "prepare_prefix_inputs",
]


def ensure_installed(model: nn.Module) -> None:
    """Install prefix-aware attention on `model` unless it is already there."""
    if not (model.config._attn_implementation or "").startswith(PREFIX):
        install(model)


def build_prefix_batch(model: nn.Module, prefix_kvs: Sequence[PrefixKV | None]) -> PrefixBatch:
    """Stack one PrefixKV (or None) per row on the model's device and dtype, after checking them.

    The one place where prefixes are validated and stacked, for forward, generate and engines (which may keep
    the result across steps and pass it to `prefix_forward(prefix_batch=...)`).
    """
    ensure_installed(model)
    for kv in prefix_kvs:
        if kv is not None and kv.sites is not None:
            raise ValueError(
                "a prefix compiled for an encoder-decoder (it has sites) cannot run on a decoder-only model"
            )
        if kv is not None and kv.position_convention not in POSITION_CONVENTIONS:
            raise ValueError(f"position convention {kv.position_convention!r} is not supported")
    weight = model.get_input_embeddings().weight
    return PrefixBatch.build(prefix_kvs, device=weight.device, dtype=weight.dtype)


def prepare_prefix_inputs(
    model: nn.Module, prefix_kvs: Sequence[PrefixKV | None], attention_mask: torch.Tensor
) -> tuple[PrefixBatch, torch.Tensor]:
    """The stacked prefixes and the position ids for a batch (used by `generate`).

    Args:
        model: the base model (sets device and dtype of the stacked prefix).
        prefix_kvs: one PrefixKV or None per row.
        attention_mask: (B, T) 1 for real tokens, 0 for padding.

    Returns:
        (prefix_batch, position_ids (B, T)).
    """
    batch = build_prefix_batch(model, prefix_kvs)
    _check_rows(batch, attention_mask.shape[0])
    return batch, real_position_ids(model, attention_mask, batch.position_shifts)


def _check_rows(batch: PrefixBatch, batch_size: int) -> None:
    if batch.batch_size != batch_size:
        raise ValueError(f"got {batch.batch_size} prefixes for a batch of {batch_size} rows")


def prefix_forward(
    model: nn.Module,
    input_ids: torch.Tensor | None = None,
    *,
    prefix_kvs: Sequence[PrefixKV | None] | None = None,
    prefix_batch: PrefixBatch | None = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    kv_store: KVStore | None = None,
    inputs_embeds: torch.Tensor | None = None,
    **kwargs: Any,
) -> Any:
    """Forward a batch where row r attends to `prefix_kvs[r]` (None: the bare model).

    Args:
        model: a transformers causal LM (prefix-aware attention is installed on first use).
        input_ids: (B, T) token ids (or `inputs_embeds` (B, T, d)).
        prefix_kvs: one PrefixKV or None per row; rows may mix adapters and prefix lengths.
        prefix_batch: instead of `prefix_kvs`, an already stacked batch (`PrefixBatch.build`), which an engine
            can reuse across decoding steps while the batch's rows stay the same.
        attention_mask: (B, T), default all ones. Ignored with a `kv_store` (the store owns the mask).
        position_ids: (B, T); default m_row + (real tokens before). Required with a `kv_store`.
        kv_store: a caller-owned KV cache (serving); transformers' cache is then not used.
        **kwargs: passed to the model (e.g. labels).

    Returns:
        The model's output (`.logits` (B, T, V), `.loss` when labels are given).
    """
    if is_encoder_decoder(model):  # three sites, no position shift (core.seq2seq_batch)
        return seq2seq_forward(
            model,
            input_ids,
            prefix_kvs=prefix_kvs,
            prefix_batch=prefix_batch,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            kv_store=kv_store,
            position_ids=position_ids,
            **kwargs,
        )
    ref = input_ids if input_ids is not None else inputs_embeds
    B, T = ref.shape[0], ref.shape[1]
    if (prefix_kvs is None) == (prefix_batch is None):
        raise ValueError("prefix_forward needs exactly one of prefix_kvs and prefix_batch")
    if prefix_batch is None:
        prefix_batch = build_prefix_batch(model, prefix_kvs)
    ensure_installed(model)
    _check_rows(prefix_batch, B)
    batch = dataclasses.replace(prefix_batch, store=kv_store)
    if kv_store is not None:
        if position_ids is None:
            raise ValueError("prefix_forward with a kv_store needs explicit position_ids")
        kwargs.update(use_cache=False, attention_mask=None)
    else:
        if attention_mask is None:
            attention_mask = torch.ones(B, T, dtype=torch.long, device=ref.device)
        if position_ids is None:
            position_ids = real_position_ids(model, attention_mask, batch.position_shifts)
        kwargs["attention_mask"] = attention_mask
    return model(
        input_ids=input_ids,
        inputs_embeds=inputs_embeds,
        position_ids=position_ids,
        prefix_batch=batch,
        **kwargs,
    )
