"""Encoders: what trains (prefix, and the adapter's own task head), mixed-adapter batches, files, detach."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from tests.conftest import batch
from tests.encoders.models import FAMILIES, make_encoder


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _perturbed_head(pm: pt.PrefixModel, name: str, seed: int) -> None:
    """Give adapter `name`'s own head weights of its own, so heads mixed up between rows would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pm.get_adapter(name).task_head.parameters():
            p.add_(torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("head", ["seq", "tok"])
def test_mixed_adapters_and_heads_equal_each_row_alone(family: str, head: str) -> None:
    pm = pt.attach(
        make_encoder(family, head), pt.PrefixConfig(num_virtual_tokens=4, init="random", seed=0, train_head=True)
    )
    pm.add_adapter("p", pt.PrefixConfig(method="prompt", num_virtual_tokens=3, init="random", seed=1, train_head=True))
    pm.add_adapter("kv", pt.PrefixConfig(method="kv", num_virtual_tokens=2, init="random", seed=2))  # model's head
    _perturbed_head(pm, "default", 0)
    _perturbed_head(pm, "p", 1)
    ids, mask = batch(B=4, n=9)
    names = ["default", "p", "kv", None]
    with torch.no_grad():
        mixed = pm(input_ids=ids, attention_mask=mask, adapter_names=names).logits
        for r, name in enumerate(names):
            alone = pm(input_ids=ids[r : r + 1], attention_mask=mask[r : r + 1], adapter_names=[name]).logits
            assert torch.allclose(mixed[r : r + 1], alone, atol=1e-5), name
            # ... and each adapter's own head is the literal path's too
            if name is not None:
                ref = pt.reference_forward(pm, ids[r : r + 1], mask[r : r + 1], adapter_name=name)
                assert torch.allclose(alone, ref, atol=1e-4), name
        assert not torch.allclose(mixed[0], mixed[1], atol=1e-3)


def test_what_trains_is_explicit() -> None:
    model = make_encoder("bert", "seq", num_labels=3)
    pm = pt.attach(model, pt.PrefixConfig(method="prefix", num_virtual_tokens=4, train_head=True))
    pm.add_adapter("frozen_head", pt.PrefixConfig(method="prefix", num_virtual_tokens=4))
    assert pm.trainable_parts() == {"prefix": 2 * 4 * 32, "head": 3 * 32 + 3}
    assert pm.trainable_parts("frozen_head") == {"prefix": 2 * 4 * 32}
    assert pm.num_trainable_parameters() == 2 * 4 * 32 + 3 * 32 + 3
    head_ids = {id(p) for p in pm.get_adapter().task_head.parameters()}
    assert head_ids <= {id(p) for p in pm.trainable_parameters()}
    assert not any(p.requires_grad for p in model.parameters())  # the model's own head is frozen too


@pytest.mark.parametrize("train_head", [True, False])
def test_training_lowers_the_loss_and_leaves_the_base_bit_identical(train_head: bool) -> None:
    model = make_encoder("roberta", "seq", num_labels=2)
    with torch.no_grad():  # a head whose output matters, as a trained one's would (random ones give logits ~ 0)
        for p in model.classifier.parameters():
            p.mul_(30)
    before = _state(model)
    pm = pt.attach(model, pt.PrefixConfig(num_virtual_tokens=4, seed=0, train_head=train_head))
    ids, mask = batch(B=4, n=8)
    labels = torch.tensor([0, 1, 0, 1])
    optimizer = torch.optim.Adam(pm.trainable_parameters(), lr=5e-2)
    losses = []
    for _ in range(15):
        loss = pm(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.02
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_save_load_round_trip_with_head(tmp_path, method: str) -> None:
    config = pt.PrefixConfig(method=method, num_virtual_tokens=3, init="random", seed=0, train_head=True)
    if method != "prompt":
        config = config.replace(position_convention="unshifted")
    pm = pt.attach(make_encoder("bert", "tok"), config)
    _perturbed_head(pm, "default", 3)
    path = pm.save_adapter(tmp_path / "a")
    assert sorted(p.name for p in path.iterdir()) == ["adapter.safetensors", "adapter_config.json", "head.safetensors"]
    loaded = pt.load_adapter(make_encoder("bert", "tok"), path)
    assert loaded.adapter_config() == config
    ids, mask = batch(B=2, n=6)
    with torch.no_grad():
        assert torch.equal(
            loaded(input_ids=ids, attention_mask=mask).logits, pm(input_ids=ids, attention_mask=mask).logits
        )


def test_an_adapter_saved_before_train_head_existed_loads(tmp_path) -> None:
    import json

    pm = pt.attach(make_encoder("bert"), pt.PrefixConfig(num_virtual_tokens=2))
    path = pm.save_adapter(tmp_path / "old")
    document = json.loads((path / "adapter_config.json").read_text())
    del document["config"]["train_head"]  # as prefixtune before issue 12 wrote it
    (path / "adapter_config.json").write_text(json.dumps(document))
    loaded = pt.load_adapter(make_encoder("bert"), path)
    assert loaded.adapter_config().train_head is False
    assert loaded.adapter_config().position_convention == "shifted"


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_detach_gives_the_encoder_back(method: str) -> None:
    twin, model = make_encoder("bert", "seq"), make_encoder("bert", "seq")
    pm = pt.attach(model, pt.PrefixConfig(method=method, num_virtual_tokens=3, seed=0, train_head=True))
    ids, mask = batch(B=2, n=6)
    with torch.no_grad():
        pm(input_ids=ids, attention_mask=mask)
    back = pm.detach()
    hooks = [*back.bert._forward_pre_hooks.values(), *back.bert.encoder.layer[-1]._forward_hooks.values()]
    assert not [h for h in hooks if h.__module__.startswith("prefixtune")]
    with torch.no_grad():
        assert torch.equal(
            back(input_ids=ids, attention_mask=mask).logits, twin(input_ids=ids, attention_mask=mask).logits
        )


def _with_new_head(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The same encoder weights with a freshly drawn classifier, as loading a head class initializes one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.classifier.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return model


def test_an_adapter_with_its_own_head_loads_onto_any_head_of_that_encoder(tmp_path) -> None:
    pm = pt.attach(make_encoder("bert"), pt.PrefixConfig(num_virtual_tokens=2, seed=0, train_head=True))
    path = pm.save_adapter(tmp_path / "own")
    other = pt.load_adapter(_with_new_head(make_encoder("bert"), seed=5), path)  # the model's head is unused
    ids, mask = batch(B=2, n=6)
    with torch.no_grad():
        assert torch.equal(
            other(input_ids=ids, attention_mask=mask).logits, pm(input_ids=ids, attention_mask=mask).logits
        )


def test_a_frozen_head_adapter_refuses_another_head(tmp_path) -> None:
    from prefixtune.errors import IncompatibleBaseModelError

    pm = pt.attach(make_encoder("bert"), pt.PrefixConfig(num_virtual_tokens=2, seed=0))
    path = pm.save_adapter(tmp_path / "frozen")
    pt.load_adapter(make_encoder("bert"), path)  # the same head: fine
    with pytest.raises(IncompatibleBaseModelError, match="the task head differs"):
        pt.load_adapter(_with_new_head(make_encoder("bert"), seed=5), path)


@pytest.mark.parametrize("family", ["bert", "modernbert"])
@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_checkpointing_and_compile_once_give_the_plain_gradients(family: str, method: str) -> None:
    ids, mask = batch(B=3, n=8)
    labels = torch.randint(0, 3, (3, 8), generator=torch.Generator().manual_seed(0))
    grads = []
    for checkpointing, once in [(False, False), (True, False), (False, True)]:
        config = pt.PrefixConfig(method=method, num_virtual_tokens=3, init="random", seed=0, train_head=True)
        pm = pt.attach(make_encoder(family, "tok"), config)
        if checkpointing:
            pm.gradient_checkpointing_enable()
            assert any(getattr(m, "gradient_checkpointing", False) is True for m in pm.base_model.modules())
        pm.train()
        with pm.compile_once() if once else torch.enable_grad():
            for r in range(3):  # three micro-batches of one row
                rows = slice(r, r + 1)
                (pm(input_ids=ids[rows], attention_mask=mask[rows], labels=labels[rows]).loss / 3).backward()
        grads.append([p.grad.clone() for p in pm.trainable_parameters()])
    assert all(g.abs().sum() > 0 for g in grads[0])
    for other in grads[1:]:
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[0], other, strict=True))
