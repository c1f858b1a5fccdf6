"""A fourth method, defined and registered in this file alone, goes through every part of prefixtune:
attach, a training step, save/load, `inspect`, `doctor`, PEFT export and serving on the built-in engine.

It is the acceptance test of issue 11, item 1: knowledge of a method lives in its `Parametrization` class,
so a new method is one new class, with no edit anywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

import prefixtune as pt
from prefixtune.cli.main import main
from prefixtune.config import PrefixConfig
from prefixtune.core.capture import capture_kv
from prefixtune.core.geometry import ModelGeometry
from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.diagnostics import run_doctor
from prefixtune.io.peft_export import export_peft
from prefixtune.parametrizations import register, unregister
from prefixtune.parametrizations.base import Parametrization
from prefixtune.serve.server import create_app
from tests.conftest import batch, make_model
from tests.serve.conftest import greedy_tokens, serve_config
from tests.train.conftest import make_tokenizer

METHOD = "stacked_kv"


class StackedKV(Parametrization):
    """Every layer's keys and values in one (L, 2, H_kv, m, D) tensor named "kv" (all layers alike in shape)."""

    method = METHOD
    trains = "one (L x 2 x H_kv x m x D) tensor of keys and values"
    injected = "prepended to every layer's attention keys/values"
    supports_reparam = False

    def __init__(self, config: PrefixConfig, geometry: ModelGeometry, kv: torch.Tensor) -> None:
        super().__init__(config, geometry)
        self.kv = nn.Parameter(kv)  # (L, 2, H, m, D)

    @classmethod
    def create(cls, config, model, geometry, tokenizer):
        generator = torch.Generator().manual_seed(config.seed or 0)
        ids = torch.randint(3, 100, (1, config.num_virtual_tokens), generator=generator)
        with torch.no_grad():
            keys, values = capture_kv(model, input_ids=ids)  # per layer (1, H, m, D): the model's own scale
        layers = [torch.stack([k[0], v[0]]) for k, v in zip(keys, values, strict=True)]  # (2, H, m, D) each
        return cls(config, geometry, torch.stack(layers).float())

    def compile(self, model: nn.Module, fingerprint: dict | None = None) -> PrefixKV:
        return self._kv(self.kv[:, 0].unbind(0), self.kv[:, 1].unbind(0), fingerprint)

    def folded_state(self) -> dict[str, torch.Tensor]:
        return {"kv": self.kv.detach().float().contiguous()}

    @classmethod
    def expected_shapes(cls, config, geometry):
        (H, D), L, m = geometry.kv_shapes[0], geometry.num_layers, config.num_virtual_tokens
        return {"kv": (L, 2, H, m, D)}

    @classmethod
    def from_folded(cls, config, geometry, tensors):
        return cls(config, geometry, tensors["kv"].float())

    @classmethod
    def tensor_ranks(cls) -> dict[str, int]:
        return {"kv": 5}

    @classmethod
    def layer_views(cls, tensors):
        return [t.flatten() for t in tensors["kv"]]

    @classmethod
    def width_problem(cls, tensors, geometry):
        H, D = tensors["kv"].shape[2], tensors["kv"].shape[4]
        return None if geometry.kv_shapes[0] == (H, D) else f"{H} heads of size {D} do not fit the model"


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[None]:
    register(StackedKV)
    yield
    unregister(METHOD)


def config(**changes) -> PrefixConfig:
    return PrefixConfig(method=METHOD, num_virtual_tokens=3, init="random", seed=5).replace(**changes)


def test_attach_and_a_training_step_move_only_the_new_method_s_tensor():
    model = make_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pm = pt.attach(model, config())
    assert isinstance(pm.get_adapter(), StackedKV) and pm.num_trainable_parameters() == 3 * 2 * 2 * 3 * 8
    ids, mask = batch()
    bare = pt.PrefixModel(make_model("llama"))(ids, attention_mask=mask).logits
    start = pm.trainable_parameters()[0].detach().clone()
    optimizer = torch.optim.Adam(pm.trainable_parameters(), lr=1e-2)
    loss = pm(ids, attention_mask=mask, labels=ids).loss
    loss.backward()
    optimizer.step()
    assert not torch.equal(pm.trainable_parameters()[0], start)
    assert not torch.allclose(pm(ids, attention_mask=mask).logits, bare)  # the prefix acts
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the base stays frozen


def test_save_then_load_round_trips(tmp_path: Path):
    pm = pt.attach(make_model("llama"), config())
    path = pm.save_adapter(tmp_path / "fourth")
    loaded = pt.load_adapter(make_model("llama"), path)
    assert loaded.adapter_config().method == METHOD
    ids, mask = batch()
    with torch.no_grad():
        assert torch.equal(pm(ids, attention_mask=mask).logits, loaded(ids, attention_mask=mask).logits)


def test_inspect_describes_it(tmp_path: Path, capsys):
    path = pt.attach(make_model("llama"), config()).save_adapter(tmp_path / "fourth")
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["method"] == METHOD and info["trains"] == StackedKV.trains
    assert len(info["per_layer_norms"]) == 3 and info["tensors"] == {"kv": [3, 2, 2, 3, 8]}


def test_doctor_finds_it_healthy_and_finds_its_damage(tmp_path: Path):
    model = make_model("llama")
    pm = pt.attach(model, config())
    healthy = run_doctor(make_model("llama"), pm.save_adapter(tmp_path / "ok"))
    assert healthy.is_healthy, healthy.findings
    assert healthy.facts["method"] == METHOD and healthy.facts["adapter_layers"] == 3
    with torch.no_grad():
        pm.get_adapter().kv.zero_()
    findings = run_doctor(make_model("llama"), pm.save_adapter(tmp_path / "zero")).findings
    assert [f.code for f in findings] == ["zero_prefix"]


def test_peft_export_goes_through_its_compiled_keys_and_values(tmp_path: Path):
    pm = pt.attach(make_model("llama"), config())
    with pytest.raises(pt.ConfigError, match="PROMPT_TUNING"):
        export_peft(pm, tmp_path / "refused", peft_type="PROMPT_TUNING")
    peft_dir = export_peft(pm, tmp_path / "peft")  # PREFIX_TUNING: its compiled keys/values
    as_kv = pt.load_adapter(make_model("llama"), peft_dir)
    ids, mask = batch()
    with torch.no_grad():
        assert torch.allclose(pm(ids, attention_mask=mask).logits, as_kv(ids, attention_mask=mask).logits, atol=1e-5)


def test_the_built_in_engine_serves_it(tmp_path: Path):
    from tests.serve.conftest import served_model

    root = tmp_path / "adapters"
    pt.attach(served_model(), config(), adapter_name="a").save_adapter(root / "fourth", "a")
    tokenizer = make_tokenizer()
    app = create_app(served_model(), tokenizer, serve_config(root))
    body = {"model": "fourth", "prompt": "serve me", "max_tokens": 5, "temperature": 0, "logprobs": 1}
    with TestClient(app) as client:
        models = [m["id"] for m in client.get("/v1/models").json()["data"]]
        response = client.post("/v1/completions", json=body)
    assert "fourth" in models
    assert response.status_code == 200, response.text
    expected = greedy_tokens(root / "fourth", tokenizer("serve me")["input_ids"], 5)
    got = response.json()["choices"][0]["logprobs"]["tokens"]
    assert got == [tokenizer.decode([t], skip_special_tokens=False) for t in expected]
