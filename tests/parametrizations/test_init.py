"""Initializations: every init starts each layer (and keys apart from values) at different values, and a seed
makes the start reproducible."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from tests.conftest import make_model
from tests.train.conftest import make_tokenizer

INITS = [("random", None), ("vocab", None), ("text", "a short text to start from")]


def start(method: str, init: str, text: str | None, seed: int | None = 3, reparam: int | None = None) -> pt.PrefixModel:
    config = pt.PrefixConfig(
        method=method, num_virtual_tokens=4, init=init, init_text=text, seed=seed, reparam_hidden=reparam
    )
    return pt.attach(make_model("llama"), config, tokenizer=make_tokenizer())


def assert_all_different(tensors: list[torch.Tensor]) -> None:
    for i, a in enumerate(tensors):
        for b in tensors[i + 1 :]:
            assert not torch.allclose(a, b), "two layers start equal"


@pytest.mark.parametrize("init,text", INITS)
@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_layers_start_different(method: str, init: str, text: str | None) -> None:
    pm = start(method, init, text)
    with torch.no_grad():
        kv = pm.compile()
        stored = pm.get_adapter().folded_state()
    assert_all_different(list(kv.keys))
    assert_all_different(list(kv.values))
    layers = type(pm.get_adapter()).layer_views(stored)
    if layers is not None:  # the trained numbers themselves, per layer
        assert_all_different(layers)


@pytest.mark.parametrize("method", ["prefix", "kv"])
def test_reparametrized_layers_start_different(method: str) -> None:
    with torch.no_grad():
        kv = start(method, "random", None, reparam=8).compile()
    assert_all_different(list(kv.keys))


def test_seeded_random_kv_draws_independent_noise_for_every_layer_keys_and_values() -> None:
    """Regression: a fresh generator per draw gave every layer, keys and values, the same noise (issue 11)."""
    stored = start("kv", "random", None).get_adapter().folded_state()
    normalized = [t / t.std() for t in stored.values()]  # the draws differ only by a per-layer scale when repeated
    assert_all_different(normalized)


@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_a_seed_makes_the_start_reproducible(method: str) -> None:
    a, b = (start(method, "random", None, seed=11).get_adapter().folded_state() for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
