"""Only the prefixes train: gradients, a frozen base, parameter counts, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from tests.conftest import batch, make_model


def _state_bytes(model: torch.nn.Module) -> dict[str, bytes]:
    return {k: v.detach().cpu().numpy().tobytes() for k, v in model.state_dict().items()}


def _loss(pm: pt.PrefixModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    labels = ids.masked_fill(mask == 0, -100)
    return pm(input_ids=ids, attention_mask=mask, labels=labels).loss


@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_twenty_steps_train_only_the_prefix(model_kind: str, method: str) -> None:
    model = make_model(model_kind)
    before = _state_bytes(model)
    pm = pt.attach(model, pt.PrefixConfig(method=method, num_virtual_tokens=4, seed=0))
    params = pm.trainable_parameters()
    start = [p.detach().clone() for p in params]
    assert all(not p.requires_grad for p in model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-2)
    ids, mask = batch()
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = _loss(pm, ids, mask)
        loss.backward()
        assert all(p.grad is None for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert _state_bytes(model) == before  # the base model is bit-for-bit unchanged
    for p, p0 in zip(params, start, strict=True):
        assert not torch.equal(p.detach(), p0)


def test_every_layer_prefix_gets_a_gradient(model_kind: str) -> None:
    pm = pt.attach(make_model(model_kind), pt.PrefixConfig(method="prefix", num_virtual_tokens=3, seed=0))
    ids, mask = batch()
    _loss(pm, ids, mask).backward()
    grad = pm.adapters["default"].prefix.grad  # (L, m, d)
    assert grad is not None
    per_layer = grad.flatten(1).abs().sum(-1)
    assert bool((per_layer > 0).all()), per_layer


@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_trainable_parameter_counts(method: str) -> None:
    model = make_model("llama")  # L=3, d=32, H_kv=2, D=8 -> d_kv = 16
    m = 5
    pm = pt.attach(model, pt.PrefixConfig(method=method, num_virtual_tokens=m))
    L, d, d_kv = 3, 32, 16
    expected = {"prefix": L * m * d, "kv": 2 * L * m * d_kv, "prompt": m * d}[method]
    assert pm.num_trainable_parameters() == expected


def test_reparametrization_trains_the_mlp_and_folds_on_save(tmp_path) -> None:
    pm = pt.attach(make_model("gpt2"), pt.PrefixConfig(method="prefix", num_virtual_tokens=4, reparam_hidden=16))
    L, m, d = 3, 4, 32
    assert pm.num_trainable_parameters() == m * d + (d * 16 + 16) + (16 * L * d + L * d)
    ids, mask = batch()
    with torch.no_grad():
        before = pm(input_ids=ids, attention_mask=mask).logits
    pm.save_adapter(tmp_path / "a")
    loaded = pt.load_adapter(make_model("gpt2"), tmp_path / "a")
    assert loaded.num_trainable_parameters() == L * m * d  # the MLP is folded away
    with torch.no_grad():
        after = loaded(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_gradient_checkpointing_gives_the_same_gradients(model_kind: str, method: str, monkeypatch) -> None:
    grads, layer_calls = [], []
    for checkpointing in (False, True):
        model = make_model(model_kind)
        model.train()
        pm = pt.attach(model, pt.PrefixConfig(method=method, num_virtual_tokens=4, seed=0))
        if checkpointing:
            pm.gradient_checkpointing_enable()
        calls = []
        mlp_cls = type(model.get_decoder().layers[0].mlp if model_kind == "llama" else model.transformer.h[0].mlp)
        original = mlp_cls.forward

        def counted(self, x, original=original, calls=calls):
            calls.append(1)
            return original(self, x)

        # Count MLP runs (module hooks do not fire during checkpoint recomputation).
        monkeypatch.setattr(mlp_cls, "forward", counted)
        ids, mask = batch()
        _loss(pm, ids, mask).backward()
        layer_calls.append(len(calls))
        monkeypatch.undo()
        grads.append([p.grad.clone() for p in pm.trainable_parameters()])
    assert layer_calls[1] > layer_calls[0]  # checkpointing really recomputed the layers
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6), float((a - b).abs().max())
