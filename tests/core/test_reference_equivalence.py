"""The fast path (compiled prefix + injection) equals the literal reference path (DESIGN.md §1)."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from prefixtune.core.reference import reference_kv_logits, reference_logits
from tests.conftest import batch, make_model

TOL = 1e-4


def _max_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float((a - b)[mask.bool()].abs().max())


@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("m", [1, 8])
@pytest.mark.parametrize("init", ["random", "vocab"])
@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_fast_path_equals_reference(kind: str, method: str, init: str, m: int, padding: str) -> None:
    # init="random": every layer's prefix is independent noise, so per-layer injection cannot pass for
    # injecting once (under init="vocab" an untrained "prefix" adapter is prompt tuning).
    pm = pt.attach(make_model(kind), pt.PrefixConfig(method=method, num_virtual_tokens=m, init=init, seed=0))
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


@pytest.mark.parametrize("method", ["prefix", "kv"])
def test_the_reference_tells_each_layer_s_prefix_apart(method: str) -> None:
    """The equivalence above would fail if the fast path gave layer l another layer's prefix."""
    pm = pt.attach(make_model("llama"), pt.PrefixConfig(method=method, num_virtual_tokens=3, init="random", seed=0))
    ids, mask = batch()
    with torch.no_grad():
        fast = pm(input_ids=ids, attention_mask=mask).logits
        adapter = pm.get_adapter()
        if method == "prefix":
            adapter.prefix.copy_(adapter.prefix.roll(1, dims=0))  # layer l gets layer l-1's P
        else:
            for store in (adapter.keys, adapter.values):
                rolled = [t.clone() for t in store][-1:] + [t.clone() for t in store][:-1]
                for t, new in zip(store, rolled, strict=True):
                    t.copy_(new)
    assert _max_diff(fast, pt.reference_forward(pm, ids, mask), mask) > 1e-3


def test_kv_reference_is_the_literal_concatenation() -> None:
    """Method "kv" with one layer written out by hand: softmax(q [K_p ; K]^T / sqrt(D)) [V_p ; V]."""
    model = make_model("gpt2")
    pm = pt.attach(model, pt.PrefixConfig(method="kv", num_virtual_tokens=2, init="random", seed=1))
    ids = torch.randint(3, 100, (1, 4), generator=torch.Generator().manual_seed(0))
    block = model.transformer.h[0]
    keys, values = pm.get_adapter().layer_tensors()
    with torch.no_grad():
        h = model.transformer.wte(ids) + model.transformer.wpe(torch.arange(2, 6)[None])  # real tokens at m + j
        q, k, v = block.attn.c_attn(block.ln_1(h)).split(32, dim=-1)  # (1, 4, 32) each
        heads = [t.view(1, 4, 4, 8).transpose(1, 2) for t in (q, k, v)]  # (1, H, 4, D)
        K = torch.cat([keys[0][None], heads[1]], dim=2)  # (1, H, m + 4, D)
        V = torch.cat([values[0][None], heads[2]], dim=2)
        allowed = torch.ones(4, 6, dtype=torch.bool).tril(diagonal=2)  # every prefix column, causal after
        scores = (heads[0] @ K.transpose(-1, -2) / 8**0.5).masked_fill(~allowed, float("-inf"))
        by_hand = (scores.softmax(-1) @ V).transpose(1, 2).reshape(1, 4, 32)
        by_hand = block.attn.c_proj(by_hand)  # layer 0's attention output, by hand

        seen: list[torch.Tensor] = []
        handle = block.attn.register_forward_hook(lambda mod, args, out: seen.append(out[0]))
        try:
            reference_kv_logits(model, ids, None, keys, values)
        finally:
            handle.remove()
    assert torch.allclose(seen[0], by_hand, atol=1e-5)
