"""Compiling prefixes on an encoder-decoder: the keys/values of its sites, read by running its frozen layers.

`core.capture.capture_kv` records every slot (encoder, decoder, cross) of an encoder-decoder; this module
picks the slots of the sites an adapter uses, and runs hidden-state prefixes P^l through the encoder and
decoder layers (method "prefix"): layer l's self-attention keys/values come from its own P^l.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prefixtune.core.capture import capture_kv, layer_input_states
from prefixtune.core.hf.seq2seq import SELF_SITES, slot_sites


def pick_sites(model: nn.Module, per_slot: Sequence[torch.Tensor], sites: Sequence[str]) -> list[torch.Tensor]:
    """The entries of `per_slot` (one per slot of the model) whose site is in `sites`, in slot order."""
    return [t for t, site in zip(per_slot, slot_sites(model), strict=True) if site in sites]


def _self_slot_sites(model: nn.Module) -> list[str]:
    """The site of every layer a hidden-state prefix enters: encoder layers, then decoder layers."""
    return [site for site in slot_sites(model) if site in SELF_SITES]


def hidden_prefix_kv(
    model: nn.Module, states: torch.Tensor, sites: Sequence[str]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Self-attention keys/values of hidden-state prefixes, one per layer of the self-attention `sites`.

    Args:
        model: a frozen encoder-decoder (gradients flow to `states`).
        states: (L_h, m, d): P^l for every encoder layer (if "encoder" in sites), then every decoder layer
            (if "decoder" in sites).
        sites: the adapter's sites (the "cross" site is ignored here: it is trained as keys/values).

    Returns:
        (keys, values): per layer of those sites, (H_kv, m, D).
    """
    layer_sites = _self_slot_sites(model)
    chosen = [i for i, site in enumerate(layer_sites) if site in sites]
    weight = model.get_input_embeddings().weight
    m, d = states.shape[1], states.shape[2]
    # Layers of a site the adapter does not use still run (the stack runs them); their keys are discarded.
    full = torch.zeros(len(layer_sites), m, d, dtype=weight.dtype, device=weight.device)
    full = full.index_copy(0, torch.tensor(chosen, device=weight.device), states.to(weight.dtype))
    dummy = torch.zeros(1, m, d, dtype=weight.dtype, device=weight.device)
    keys, values = capture_kv(model, inputs_embeds=dummy, layer_inputs=full[None])
    wanted = [s for s in SELF_SITES if s in sites]
    return [k[0] for k in pick_sites(model, keys, wanted)], [v[0] for v in pick_sites(model, values, wanted)]


def hidden_states_of(model: nn.Module, input_ids: torch.Tensor, sites: Sequence[str]) -> torch.Tensor:
    """The inputs the self-attention `sites`' layers receive for `input_ids` (1, m) as both encoder and
    decoder input: (L_h, m, d), the "vocab"/"text" initialization of method "prefix"."""
    states = layer_input_states(model, input_ids)[0]  # (L_enc + L_dec, m, d)
    keep = [i for i, site in enumerate(_self_slot_sites(model)) if site in sites]
    return states[keep]
