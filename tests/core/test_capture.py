"""Compiling by capture: what runs, and that an attached model survives copy.deepcopy."""

from __future__ import annotations

import copy

import pytest
import torch

import prefixtune as pt
from tests.conftest import make_model


def _mlp_class(model):
    return type(model.get_decoder().layers[0].mlp)


@pytest.mark.parametrize("method, runs_mlp", [("prefix", False), ("prompt", True)])
def test_prefix_compile_stops_each_layer_after_its_keys_and_values(method, runs_mlp, monkeypatch):
    model = make_model("llama")
    pm = pt.attach(model, pt.PrefixConfig(method=method, num_virtual_tokens=3, seed=0))
    calls = []
    cls = _mlp_class(model)
    original = cls.forward
    monkeypatch.setattr(cls, "forward", lambda self, x: calls.append(1) or original(self, x))
    pm.compile()
    # "prefix": every layer's input is replaced by P^l, so nothing after a layer's keys/values is needed.
    # "prompt": the prompt flows through the layers, so layers 0..L-2 run whole.
    assert len(calls) == (model.config.num_hidden_layers - 1 if runs_mlp else 0)
    ids = torch.tensor([[5, 6, 7]])
    assert len(model(input_ids=ids).logits) == 1  # an ordinary forward afterwards runs whole
    assert len(calls) > (model.config.num_hidden_layers - 1 if runs_mlp else 0)


def test_a_deep_copy_compiles_from_its_own_weights():
    config = pt.PrefixConfig(method="prefix", num_virtual_tokens=3, seed=0)
    original = pt.attach(make_model("llama"), config)
    with torch.no_grad():
        before = original.compile()
    copied = copy.deepcopy(original.base_model)
    fresh = make_model("llama")
    with torch.no_grad():
        for model in (copied, fresh):
            model.get_decoder().layers[1].self_attn.k_proj.weight.mul_(2.0)
    pm_copy = pt.PrefixModel(copied)
    pm_fresh = pt.PrefixModel(fresh)
    for pm in (pm_copy, pm_fresh):
        pm.add_adapter("default", config)
        pm.adapters["default"].load_state_dict(original.adapters["default"].state_dict())
    with torch.no_grad():
        got, want = pm_copy.compile(), pm_fresh.compile()
        again = original.compile()
    for layer in range(len(want.keys)):
        torch.testing.assert_close(got.keys[layer], want.keys[layer])
        torch.testing.assert_close(again.keys[layer], before.keys[layer])  # the original is untouched
    assert not torch.allclose(got.keys[1], before.keys[1])


def test_capture_without_inputs_is_a_value_error_not_an_attribute_error():
    """Regression: the guard ran after reading `.shape` of the missing input (issue 11, item 6)."""
    from prefixtune.core.capture import capture_kv

    model = make_model("llama")
    with pytest.raises(ValueError, match="exactly one of inputs_embeds and input_ids"):
        capture_kv(model)
    with pytest.raises(ValueError, match="layer_inputs cover 3 positions, the inputs 2"):
        capture_kv(model, inputs_embeds=torch.zeros(1, 2, 32), layer_inputs=torch.zeros(1, 3, 3, 32))
