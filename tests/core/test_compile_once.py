"""`PrefixModel.compile_once`: one compile per accumulated optimizer step, with the same gradients."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from tests.conftest import batch, make_model


def _two_adapters(method: str) -> pt.PrefixModel:
    pm = pt.attach(make_model("llama"), pt.PrefixConfig(method=method, num_virtual_tokens=4, seed=0), adapter_name="a")
    pm.add_adapter("b", pt.PrefixConfig(method=method, num_virtual_tokens=2, seed=1))
    pm.train()
    return pm


def _accumulate(pm: pt.PrefixModel, micro_batches) -> None:
    for ids, mask in micro_batches:
        labels = ids.masked_fill(mask == 0, -100)
        names = ["a", "b", None, "a"][: ids.shape[0]]
        loss = pm(input_ids=ids, attention_mask=mask, labels=labels, adapter_names=names).loss
        (loss / len(micro_batches)).backward()


def _grads(pm: pt.PrefixModel) -> list[torch.Tensor]:
    return [p.grad.clone() for p in pm.trainable_parameters()]


def _micro_batches():
    ids, mask = batch()
    return [(ids, mask), (ids.flip(0), mask.flip(0)), (ids.roll(1, dims=1), mask)]


@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_compile_once_gives_the_gradients_of_compiling_every_pass(method: str, monkeypatch) -> None:
    reference = _two_adapters(method)
    _accumulate(reference, _micro_batches())
    per_pass = _grads(reference)

    pm = _two_adapters(method)
    compiles = []
    compile_ = pm.compile
    monkeypatch.setattr(pm, "compile", lambda name=None: compiles.append(name) or compile_(name))
    with pm.compile_once():
        _accumulate(pm, _micro_batches())
        assert all(p.grad is None for p in pm.trainable_parameters())  # carried back when the block ends
    got = _grads(pm)
    assert sorted(compiles) == ["a", "b"]  # each adapter once, not once per micro-batch
    assert all(g.abs().sum() > 0 for g in got)
    for a, b in zip(per_pass, got, strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)


def test_an_error_inside_compile_once_leaves_the_parameters_untouched() -> None:
    pm = _two_adapters("prefix")
    with pytest.raises(ValueError, match="boom"), pm.compile_once():
        _accumulate(pm, _micro_batches()[:1])
        raise ValueError("boom")
    assert all(p.grad is None for p in pm.trainable_parameters())
    with pm.compile_once():  # the model is usable again
        _accumulate(pm, _micro_batches()[:1])
    assert all(p.grad is not None for p in pm.trainable_parameters())


def test_compile_once_does_not_nest_and_leaves_no_grad_forwards_alone() -> None:
    pm = _two_adapters("kv")
    with pm.compile_once(), pytest.raises(RuntimeError, match="do not nest"), pm.compile_once():
        pass
    with pm.compile_once(), torch.no_grad():
        ids, mask = batch()
        out = pm(input_ids=ids, attention_mask=mask, adapter_names=["a"] * ids.shape[0])
    assert not out.logits.requires_grad
