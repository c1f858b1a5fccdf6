"""Method "prefix" on an encoder-decoder (T5, BART): what differs from a decoder-only model, in one place.

P^l enters every layer of the self-attention sites the adapter uses (encoder, decoder), exactly as in a
decoder: the frozen layer runs on [P^l ; H^{l-1}] and only the real positions go on. The cross-attention site
has no layer input of its own to prepend to (its keys come from the encoder outputs), so it is trained as
keys/values prepended to the encoder outputs' keys/values (Li & Liang's BART setting), stored as
`cross_keys.{l}` / `cross_values.{l}`, one (H_kv, m, D) pair per decoder layer.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch
from torch import nn

from prefixtune.config import PrefixConfig
from prefixtune.core.capture import capture_kv
from prefixtune.core.geometry import ModelGeometry
from prefixtune.core.reference_seq2seq import SitePrefixes
from prefixtune.core.seq2seq_capture import hidden_prefix_kv, hidden_states_of, pick_sites
from prefixtune.errors import ConfigError
from prefixtune.parametrizations.init import embedding_scale, generator, init_token_ids, random_normal
from prefixtune.parametrizations.reparam import ReparamMLP

if TYPE_CHECKING:
    from prefixtune.parametrizations.prefix import HiddenStatePrefix

SELF_SITES = ("encoder", "decoder")
_CROSS = re.compile(r"^cross_(keys|values)\.(\d+)$")


def hidden_layers(geometry: ModelGeometry) -> int:
    """The number of layers with a hidden-state prefix (every layer of a decoder-only model)."""
    if not geometry.sites:
        return geometry.num_layers
    return sum(site != "cross" for site in geometry.sites)


def _cross_shapes(geometry: ModelGeometry) -> list[tuple[int, int]]:
    return [shape for shape, site in zip(geometry.kv_shapes, geometry.sites, strict=True) if site == "cross"]


def create(
    cls: type[HiddenStatePrefix], config: PrefixConfig, model: nn.Module, geometry: ModelGeometry, tokenizer
) -> HiddenStatePrefix:
    """A new, initialized encoder-decoder "prefix" adapter (see `PrefixConfig.init`)."""
    sites = tuple(dict.fromkeys(geometry.sites))
    L, m, d = hidden_layers(geometry), config.num_virtual_tokens, geometry.hidden_size
    if config.reparam_hidden is not None and "cross" in sites:
        raise ConfigError(
            "reparam_hidden with method 'prefix' covers the hidden-state prefixes only; drop 'cross' from "
            "sites, or use method 'kv' (whose MLP produces every site's keys/values)"
        )
    like = torch.empty(0, dtype=torch.float32, device=model.get_input_embeddings().weight.device)
    rng = generator(config)
    probe = config if config.init != "random" else config.replace(init="vocab")
    ids = init_token_ids(probe, model, tokenizer, rng)
    with torch.no_grad():
        start = hidden_states_of(model, ids, sites).float()  # (L, m, d)
        keys, values = capture_kv(model, input_ids=ids)
    cross_k = [k[0].float() for k in pick_sites(model, keys, ("cross",))]
    cross_v = [v[0].float() for v in pick_sites(model, values, ("cross",))]
    if config.init == "random":
        start = random_normal((L, m, d), embedding_scale(model), rng, like)
        cross_k = [random_normal(tuple(k.shape), float(k.std()), rng, like) for k in cross_k]
        cross_v = [random_normal(tuple(v.shape), float(v.std()), rng, like) for v in cross_v]
    cross = (cross_k, cross_v) if "cross" in sites else None
    if config.reparam_hidden is not None:
        table = model.get_input_embeddings()(ids)[0].detach().float()
        if config.init == "random":
            table = random_normal((m, d), embedding_scale(model), rng, like)
        return cls(config, geometry, reparam=ReparamMLP(table, config.reparam_hidden, L * d))
    return cls(config, geometry, prefix=start if L else None, cross=cross)


def compile_kv(adapter: HiddenStatePrefix, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per slot of the adapter's sites (encoder, decoder, cross order), its keys and values."""
    keys: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    if adapter.has_hidden:
        keys, values = hidden_prefix_kv(model, adapter.states(), adapter.geometry.sites)
    if adapter.cross_keys is not None:
        keys += list(adapter.cross_keys)
        values += list(adapter.cross_values)
    return keys, values


def cross_state(adapter: HiddenStatePrefix) -> dict[str, torch.Tensor]:
    """The cross-attention site's stored tensors (none for a decoder-only model)."""
    if adapter.cross_keys is None:
        return {}
    out = {f"cross_keys.{i}": k.detach().float().contiguous() for i, k in enumerate(adapter.cross_keys)}
    return out | {f"cross_values.{i}": v.detach().float().contiguous() for i, v in enumerate(adapter.cross_values)}


def cross_from(tensors: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
    """The saved cross-attention keys/values, in layer order (None when the adapter has no cross site)."""
    count = sum(1 for name in tensors if name.startswith("cross_keys."))
    if not count:
        return None
    return (
        [tensors[f"cross_keys.{i}"].float() for i in range(count)],
        [tensors[f"cross_values.{i}"].float() for i in range(count)],
    )


def expected_shapes(config: PrefixConfig, geometry: ModelGeometry) -> dict[str, tuple[int, ...]]:
    m, L = config.num_virtual_tokens, hidden_layers(geometry)
    out: dict[str, tuple[int, ...]] = {"prefix": (L, m, geometry.hidden_size)} if L else {}
    for i, (H, D) in enumerate(_cross_shapes(geometry)):
        out[f"cross_keys.{i}"] = (H, m, D)
        out[f"cross_values.{i}"] = (H, m, D)
    return out


def layout_problem(tensors: dict[str, torch.Tensor]) -> str | None:
    """Why `tensors` are not an encoder-decoder "prefix" adapter's (prefix 3-D, cross_keys/values.{l} 3-D)."""
    names_ok = all(name == "prefix" or _CROSS.match(name) for name in tensors)
    if names_ok and all(t.ndim == 3 for t in tensors.values()):
        return None
    return "stores one 3-D tensor 'prefix' and/or 3-D cross_keys.{l}, cross_values.{l}"


def cross_views(tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Each cross-attention layer's keys and values, flattened (after the hidden-state layers)."""
    cross = cross_from(tensors)
    if cross is None:
        return []
    return [torch.cat([k.flatten(), v.flatten()]) for k, v in zip(*cross, strict=True)]


def site_prefixes(adapter: HiddenStatePrefix) -> SitePrefixes:
    """The adapter as the literal reference path takes it: P^l per self-attention site, cross as keys/values."""
    sites = adapter.geometry.sites
    hidden: dict[str, torch.Tensor] = {}
    if adapter.has_hidden:
        states, start = adapter.states(), 0
        for site in SELF_SITES:
            count = sum(s == site for s in sites)
            if count:
                hidden[site] = states[start : start + count]
                start += count
    kv = {}
    if adapter.cross_keys is not None:
        kv["cross"] = (list(adapter.cross_keys), list(adapter.cross_values))
    return SitePrefixes(hidden=hidden, kv=kv)
