"""One batch mixes adapters (different m) and bare rows; each row equals that row run alone."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from tests.conftest import batch, make_model


def _two_adapters(kind: str, attn: str = "sdpa") -> pt.PrefixModel:
    pm = pt.attach(
        make_model(kind, attn), pt.PrefixConfig(method="prefix", num_virtual_tokens=3, seed=0), adapter_name="a"
    )
    pm.add_adapter("b", pt.PrefixConfig(method="kv", num_virtual_tokens=7, seed=1))
    pm.add_adapter("c", pt.PrefixConfig(method="prompt", num_virtual_tokens=2, seed=2))
    return pm


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("padding", ["left", "right"])
def test_mixed_forward_equals_rows_alone(model_kind: str, attn: str, padding: str) -> None:
    pm = _two_adapters(model_kind, attn)
    names = ["a", "b", None, "c"]
    ids, mask = batch(B=4, padding=padding)
    with torch.no_grad():
        mixed = pm(input_ids=ids, attention_mask=mask, adapter_names=names).logits
        for r, name in enumerate(names):
            alone = pm(input_ids=ids[r : r + 1], attention_mask=mask[r : r + 1], adapter_names=[name]).logits
            valid = mask[r].bool()
            assert torch.allclose(mixed[r][valid], alone[0][valid], atol=1e-5)


def test_bare_rows_equal_the_base_model(model_kind: str) -> None:
    model = make_model(model_kind)
    ids, mask = batch(B=3, padding="right")  # right padding: positions agree with transformers' default
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=mask).logits
    pm = _two_adapters(model_kind)
    with torch.no_grad():
        bare = pm(input_ids=ids, attention_mask=mask, adapter_names=[None, None, None]).logits
        mixed = pm(input_ids=ids, attention_mask=mask, adapter_names=[None, "a", None]).logits
    valid = mask.bool()
    assert torch.allclose(bare[valid], base[valid], atol=1e-5)
    assert torch.allclose(mixed[0][valid[0]], base[0][valid[0]], atol=1e-5)


def test_mixed_greedy_generate_equals_rows_alone(model_kind: str) -> None:
    pm = _two_adapters(model_kind)
    names = ["a", "b", None, "c"]
    ids, mask = batch(B=4, padding="left")
    mixed = pm.generate(input_ids=ids, attention_mask=mask, adapter_names=names, max_new_tokens=6, do_sample=False)
    for r, name in enumerate(names):
        keep = mask[r].bool()
        alone = pm.generate(input_ids=ids[r : r + 1, keep], adapter_names=[name], max_new_tokens=6, do_sample=False)
        assert torch.equal(mixed[r, ids.shape[1] :], alone[0, int(keep.sum()) :])


def test_unknown_adapter_name_is_a_clear_error() -> None:
    pm = _two_adapters("gpt2")
    ids, mask = batch(B=2)
    with pytest.raises(pt.AdapterNotFoundError, match="no adapter named 'zzz'"):
        pm(input_ids=ids, attention_mask=mask, adapter_names=["a", "zzz"])
    with pytest.raises(pt.ConfigError, match="2 rows"):
        pm(input_ids=ids, attention_mask=mask, adapter_names=["a"])
