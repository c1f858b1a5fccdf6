"""Encoders: the fast path (compiled prefix + injection) equals the literal reference path (issue 12, item 3),
for every supported family, head, method and position convention, with right and left padding."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from tests.conftest import batch
from tests.encoders.models import FAMILIES, make_encoder, output_of

TOL = 1e-4


def max_diff(fast: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> float:
    """Largest difference at real tokens (per-token outputs) or over all rows (pooled logits)."""
    diff = (fast - ref).abs()
    return float(diff[mask.bool()].max() if diff.dim() == 3 else diff.max())


METHODS = [
    ("prefix", "shifted"),
    ("prefix", "unshifted"),
    ("kv", "shifted"),
    ("kv", "unshifted"),
    ("prompt", "shifted"),
]
# "unshifted" is for learned absolute positions: ModernBERT (rotary) refuses it (tests/encoders/test_errors.py).
CASES = [(f, method, c) for f in FAMILIES for method, c in METHODS if not (f == "modernbert" and c == "unshifted")]


@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("m", [1, 8])
@pytest.mark.parametrize("head", ["seq", "tok", "base"])
@pytest.mark.parametrize(("family", "method", "convention"), CASES)
def test_fast_path_equals_reference(family: str, head: str, method: str, convention: str, m: int, padding: str):
    # init="random": independent noise per layer, so a layer getting another layer's prefix would show.
    config = pt.PrefixConfig(method=method, num_virtual_tokens=m, init="random", seed=0, position_convention=convention)
    pm = pt.attach(make_encoder(family, head), config)
    ids, mask = batch(B=3, n=12, padding=padding)
    with torch.no_grad():
        fast = output_of(pm(input_ids=ids, attention_mask=mask))
    ref = pt.reference_forward(pm, ids, mask)
    assert max_diff(fast, ref, mask) <= TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_eager_equals_sdpa(family: str) -> None:
    ids, mask = batch(B=3, n=10)
    outs = []
    for attn in ("sdpa", "eager"):
        pm = pt.attach(make_encoder(family, "tok", attn), pt.PrefixConfig(num_virtual_tokens=4, init="random", seed=0))
        with torch.no_grad():
            outs.append(pm(input_ids=ids, attention_mask=mask).logits)
    assert max_diff(outs[0], outs[1], mask) <= TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_without_adapter_equal_the_plain_model(family: str) -> None:
    # Checks the positions the fast path gives real tokens (RoBERTa's start at padding_idx + 1) against the
    # model numbering them itself, and that attention stays bidirectional with no padding (mask None).
    model = make_encoder(family, "tok")
    ids, mask = batch(B=3, n=10, padding="right")
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
        full = model(input_ids=ids[:1]).logits
        pm = pt.attach(model, pt.PrefixConfig(num_virtual_tokens=2, seed=0))
        rows = pm(input_ids=ids, attention_mask=mask, adapter_names=[None] * 3).logits
        row = pm(input_ids=ids[:1], adapter_names=[None]).logits
    assert max_diff(rows, plain, mask) <= TOL
    assert max_diff(row, full, torch.ones_like(ids[:1])) <= TOL


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_the_conventions_differ(family: str) -> None:
    """'unshifted' really keeps the real tokens' positions: the same prefix gives other outputs than 'shifted'."""
    ids, mask = batch(B=2, n=8)
    outs = []
    for convention in ("shifted", "unshifted"):
        config = pt.PrefixConfig(num_virtual_tokens=4, init="random", seed=0, position_convention=convention)
        pm = pt.attach(make_encoder(family, "tok"), config)
        with torch.no_grad():
            outs.append(pm(input_ids=ids, attention_mask=mask).logits)
    assert max_diff(outs[0], outs[1], mask) > 1e-3


def test_prompt_leaves_the_head_reading_the_real_tokens() -> None:
    """BERT's pooler reads position 0: with a prompt it must still read [CLS], not the first prompt slot.
    A prompt of zero effect does not exist, so compare against the model's pooler on the reference's states."""
    pm = pt.attach(make_encoder("bert", "base"), pt.PrefixConfig(method="prompt", num_virtual_tokens=5, seed=0))
    ids, mask = batch(B=2, n=6)
    with torch.no_grad():
        out = pm(input_ids=ids, attention_mask=mask)
        assert out.last_hidden_state.shape == (2, 6, 32)  # the prompt's positions are dropped
        pooled = pm.base_model.pooler(out.last_hidden_state)
    assert torch.allclose(out.pooler_output, pooled, atol=1e-6)
