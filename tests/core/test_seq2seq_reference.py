"""Encoder-decoders (T5, BART; issue 12): the fast path equals the literal reference, site by site."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from prefixtune.core.reference_seq2seq import reference_seq2seq_logits
from tests.seq2seq_models import FAMILIES, make_seq2seq, randomize, seq2seq_batch


def _logits(pm: pt.PrefixModel, ids, mask, dec, dmask, names=None) -> torch.Tensor:
    with torch.no_grad():
        out = pm(
            input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dmask, adapter_names=names
        )
    return out.logits


def _check_equal_to_reference(pm: pt.PrefixModel, padding: str) -> None:
    ids, mask, dec, dmask = seq2seq_batch(padding=padding)
    fast = _logits(pm, ids, mask, dec, dmask)
    ref = reference_seq2seq_logits(pm.base_model, ids, mask, dec, dmask, pm.get_adapter().site_prefixes())
    with torch.no_grad():
        bare = pm.base_model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dmask)
    keep = dmask.bool()
    assert (fast - ref)[keep].abs().max() <= 1e-4
    assert (fast - bare.logits)[keep].abs().max() > 1e-2  # the prefix does change the output


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["kv", "prefix"])
@pytest.mark.parametrize("m", [1, 8])
@pytest.mark.parametrize("padding", ["right", "left"])
def test_fast_equals_literal_all_sites(family: str, method: str, m: int, padding: str) -> None:
    pm = pt.attach(make_seq2seq(family), pt.PrefixConfig(method=method, num_virtual_tokens=m, init="random"))
    randomize(pm, seed=m)
    _check_equal_to_reference(pm, padding)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["kv", "prefix"])
@pytest.mark.parametrize("sites", [("encoder",), ("decoder",), ("cross",), ("encoder", "cross")])
def test_fast_equals_literal_per_site(family: str, method: str, sites: tuple[str, ...]) -> None:
    config = pt.PrefixConfig(method=method, num_virtual_tokens=3, init="random", sites=sites)
    pm = pt.attach(make_seq2seq(family), config)
    randomize(pm, seed=3)
    assert set(pm.compile().sites) == set(sites)
    _check_equal_to_reference(pm, "right")


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_equals_literal_eager(family: str) -> None:
    pm = pt.attach(make_seq2seq(family, attn="eager"), pt.PrefixConfig(method="prefix", num_virtual_tokens=4))
    randomize(pm, seed=4)
    _check_equal_to_reference(pm, "right")


def test_compiled_prefix_records_its_sites() -> None:
    pm = pt.attach(make_seq2seq("bart"), pt.PrefixConfig(method="kv", num_virtual_tokens=2))  # 2 + 3 layers
    kv = pm.compile()
    assert kv.sites == ("encoder",) * 2 + ("decoder",) * 3 + ("cross",) * 3
    assert kv.site("cross").num_layers == 3 and kv.site("encoder").num_layers == 2
