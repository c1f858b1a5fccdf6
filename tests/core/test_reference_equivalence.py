"""The fast path (compiled prefix + injection) equals the literal reference path (DESIGN.md §1)."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from prefixtune.core.reference import reference_logits
from tests.conftest import batch, make_model

TOL = 1e-4


def _max_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float((a - b)[mask.bool()].abs().max())


@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("m", [1, 8])
@pytest.mark.parametrize("method", ["prefix", "prompt"])
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_fast_path_equals_reference(kind: str, method: str, m: int, padding: str) -> None:
    pm = pt.attach(make_model(kind), pt.PrefixConfig(method=method, num_virtual_tokens=m, seed=0))
    ids, mask = batch(padding=padding)
    with torch.no_grad():
        fast = pm(input_ids=ids, attention_mask=mask).logits
    ref = pt.reference_forward(pm, ids, mask)
    assert _max_diff(fast, ref, mask) <= TOL


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_qwen3_prefix_equals_reference(attn: str) -> None:
    # Qwen3 is a Llama-family layer stack (rotary, per-head q/k RMSNorm, explicit head_dim): the literal
    # path runs its own decoder layers, so it checks that compilation captures keys after q/k norm and rotary.
    pm = pt.attach(make_model("qwen3", attn), pt.PrefixConfig(method="prefix", num_virtual_tokens=5, seed=0))
    ids, mask = batch(padding="left")
    with torch.no_grad():
        fast = pm(input_ids=ids, attention_mask=mask).logits
    assert _max_diff(fast, pt.reference_forward(pm, ids, mask), mask) <= TOL


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_eager_equals_sdpa(model_kind: str, method: str) -> None:
    cfg = pt.PrefixConfig(method=method, num_virtual_tokens=4, seed=0)
    ids, mask = batch(padding="left")
    outs = []
    for attn in ("sdpa", "eager"):
        pm = pt.attach(make_model(model_kind, attn), cfg)
        with torch.no_grad():
            outs.append(pm(input_ids=ids, attention_mask=mask).logits)
    assert _max_diff(outs[0], outs[1], mask) <= TOL


def test_prefix_differs_from_prompt_tuning() -> None:
    # The two methods are distinct: the same vectors used as P^0 only (prompt) or as every layer's prefix.
    # (Random init: with init="vocab", P^l for l >= 1 is exactly what the model computes from P^0, which is
    # prompt tuning until training moves it; `doctor` reports such adapters as embedding-only.)
    model = make_model("llama")
    pm = pt.attach(model, pt.PrefixConfig(method="prefix", num_virtual_tokens=3, init="random", seed=0))
    ids, mask = batch()
    P = pm.prefix_states().detach()
    with torch.no_grad():
        as_prefix = pm(input_ids=ids, attention_mask=mask).logits
    as_prompt = reference_logits(model, ids, mask, prompt=P[0])
    assert _max_diff(as_prefix, as_prompt, mask) > 1e-3
