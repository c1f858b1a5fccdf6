"""Per-row prefixes of an encoder-decoder forward: one `PrefixBatch` per attention site.

An encoder-decoder's attention modules are numbered as slots (`core.hf.seq2seq`): encoder self-attention,
decoder self-attention, cross-attention. A row's compiled prefix may cover any of those sites; a row whose
adapter has no prefix at a site attends there as the bare model does. `SiteBatch.at(slot)` hands the
attention function the site's batch and the layer within it, so the one attention mechanism
(`core.attention`) runs unchanged, and each site keeps its own widened-mask memo (the encoder's, the
decoder's and the cross-attention's masks differ).

Positions are never shifted here: T5 has no position ids (its relative bias gives the prefix keys none), and
BART's real tokens keep their learned positions 0..n-1; the prefix keys carry no position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prefixtune.core.hf.attention import install
from prefixtune.core.hf.seq2seq import SITES, slot_sites
from prefixtune.core.prefix_batch import PrefixBatch
from prefixtune.core.prefix_kv import PrefixKV


@dataclass(eq=False)
class SiteBatch:
    """The stacked per-row prefixes of every site, and the map from slot to (site, layer within the site).

    Attributes:
        sites: site name -> its PrefixBatch (empty when no row has a prefix there).
        slots: per slot, (site, layer within the site).
    """

    sites: dict[str, PrefixBatch]
    slots: tuple[tuple[str, int], ...]
    store: None = None  # engine-owned caches are not built for encoder-decoders

    def at(self, layer_idx: int) -> tuple[PrefixBatch, int]:
        """The PrefixBatch and layer index an attention module of slot `layer_idx` reads."""
        site, layer = self.slots[layer_idx]
        return self.sites[site], layer

    @property
    def is_empty(self) -> bool:
        return all(batch.is_empty for batch in self.sites.values())

    @property
    def batch_size(self) -> int:
        return next(iter(self.sites.values())).batch_size


def build_site_batch(model: nn.Module, prefix_kvs: Sequence[PrefixKV | None]) -> SiteBatch:
    """Stack one compiled prefix (or None) per row, site by site, on the model's device and dtype.

    Rows that share one PrefixKV object share its per-site views, so a batch on one adapter is broadcast,
    not copied per row.

    Raises:
        ValueError: a prefix compiled for a decoder-only model, or for another encoder-decoder layout.
    """
    sites = slot_sites(model)
    slots, seen = [], dict.fromkeys(SITES, 0)
    for site in sites:
        slots.append((site, seen[site]))
        seen[site] += 1
    views: dict[int, dict[str, PrefixKV | None]] = {}
    for kv in prefix_kvs:
        if kv is None or id(kv) in views:
            continue
        if kv.sites is None:
            raise ValueError("a prefix compiled for a decoder-only model cannot run on an encoder-decoder")
        views[id(kv)] = {site: kv.site(site) for site in SITES}
        for site, view in views[id(kv)].items():
            if view is not None and view.num_layers != seen[site]:
                raise ValueError(f"the prefix has {view.num_layers} {site} layers, the model {seen[site]}")
    weight = model.get_input_embeddings().weight
    per_site = {
        site: PrefixBatch.build(
            [None if kv is None else views[id(kv)][site] for kv in prefix_kvs], device=weight.device, dtype=weight.dtype
        )
        for site in SITES
    }
    for batch in per_site.values():  # an empty site's `lengths` lives on the CPU: move it with the rest
        batch.lengths = batch.lengths.to(weight.device)
        batch.valid = batch.valid.to(weight.device)
    return SiteBatch(per_site, tuple(slots))


def encoder_decoder_kwargs(
    input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, inputs_embeds: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The encoder inputs as the model's forward takes them (mask default: all ones)."""
    ref = input_ids if input_ids is not None else inputs_embeds
    if attention_mask is None:
        attention_mask = torch.ones(ref.shape[:2], dtype=torch.long, device=ref.device)
    out = {"attention_mask": attention_mask}
    out["input_ids" if input_ids is not None else "inputs_embeds"] = ref
    return out


def seq2seq_forward(
    model: nn.Module,
    input_ids: torch.Tensor | None = None,
    *,
    prefix_kvs: Sequence[PrefixKV | None] | None = None,
    prefix_batch: SiteBatch | None = None,
    attention_mask: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    **kwargs: Any,
) -> Any:
    """An encoder-decoder's forward where row r attends to `prefix_kvs[r]` at every site it covers.

    Args:
        model: a transformers encoder-decoder (T5, BART); prefix-aware attention is installed on first use.
        input_ids: (B, T_enc) encoder token ids (or `inputs_embeds`). attention_mask: (B, T_enc), default ones.
        prefix_kvs: one PrefixKV or None per row (or `prefix_batch`, already stacked by `build_site_batch`).
        **kwargs: passed to the model: `decoder_input_ids`, `decoder_attention_mask`, `labels`, ...

    Returns:
        The model's output (`.logits` (B, T_dec, V), `.loss` when labels are given).
    """
    if (prefix_kvs is None) == (prefix_batch is None):
        raise ValueError("seq2seq_forward needs exactly one of prefix_kvs and prefix_batch")
    if kwargs.pop("kv_store", None) is not None or kwargs.pop("position_ids", None) is not None:
        raise ValueError("encoder-decoders take neither a kv_store nor position ids (their positions are their own)")
    install(model)
    batch = prefix_batch if prefix_batch is not None else build_site_batch(model, prefix_kvs)
    inputs = encoder_decoder_kwargs(input_ids, attention_mask, inputs_embeds)
    if batch.batch_size != next(iter(inputs.values())).shape[0]:
        raise ValueError(f"got {batch.batch_size} prefixes for a batch of {next(iter(inputs.values())).shape[0]} rows")
    return model(**inputs, prefix_batch=batch, **kwargs)
