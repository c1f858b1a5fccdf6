"""The adapter directory: round trips, atomic writes, and a clear error for every bad-file case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import prefixtune as pt
from tests.conftest import batch, make_model


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    pm = pt.attach(make_model("llama"), pt.PrefixConfig(method="prefix", num_virtual_tokens=4, seed=0))
    pm.set_adapter_metadata(None, {"task": "demo"})
    return pm.save_adapter(tmp_path / "adapter")


@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_round_trip_gives_identical_logits(tmp_path: Path, model_kind: str, method: str) -> None:
    pm = pt.attach(make_model(model_kind), pt.PrefixConfig(method=method, num_virtual_tokens=3, seed=0))
    ids, mask = batch()
    with torch.no_grad():
        before = pm(input_ids=ids, attention_mask=mask).logits
    pm.save_adapter(tmp_path / "a", include_compiled=True)
    loaded = pt.load_adapter(make_model(model_kind), tmp_path / "a")
    with torch.no_grad():
        after = loaded(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(before, after)
    assert loaded.adapter_config().method == method


def test_saved_files_record_what_the_adapter_is(saved: Path) -> None:
    doc = json.loads((saved / "adapter_config.json").read_text())
    assert doc["format_version"] == 1
    assert doc["prefixtune_version"] == pt.__version__
    assert doc["method"] == "prefix" and doc["num_virtual_tokens"] == 4
    assert doc["position_convention"] == "shifted"
    assert doc["base_model_fingerprint"]["architecture"]["num_layers"] == 3
    assert doc["metadata"] == {"task": "demo"}
    assert set(load_file(str(saved / "adapter.safetensors"))) == {"prefix"}


def test_overwrite_is_atomic_and_leaves_no_temporaries(saved: Path) -> None:
    pm = pt.attach(make_model("llama"), pt.PrefixConfig(method="prefix", num_virtual_tokens=4, seed=1))
    pm.save_adapter(saved)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["adapter"]
    loaded = pt.load_adapter(make_model("llama"), saved)
    assert torch.equal(loaded.prefix_states(), pm.prefix_states())


def test_failed_save_leaves_the_old_adapter(saved: Path, monkeypatch) -> None:
    before = (saved / "adapter.safetensors").read_bytes()
    pm = pt.attach(make_model("llama"), pt.PrefixConfig(method="prefix", num_virtual_tokens=4, seed=1))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("prefixtune.io.adapter_dir.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        pm.save_adapter(saved)
    assert (saved / "adapter.safetensors").read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["adapter"]


def _load(path: Path, kind: str = "llama") -> pt.PrefixModel:
    return pt.load_adapter(make_model(kind), path)


def test_wrong_base_model_architecture(saved: Path) -> None:
    # The fingerprint is compared before the shapes (before: a shape error hid the real cause).
    with pytest.raises(pt.IncompatibleBaseModelError, match="made for another base model"):
        _load(saved, "gpt2")


def test_wrong_base_model_weights(saved: Path) -> None:
    other = make_model("llama", seed=123)  # same architecture, other weights
    with pytest.raises(pt.IncompatibleBaseModelError, match="weights differ"):
        pt.load_adapter(other, saved)
    loaded = pt.load_adapter(other, saved, check_fingerprint=False)  # explicit override
    assert loaded.adapter_names == ["default"]


def test_missing_files(saved: Path) -> None:
    (saved / "adapter.safetensors").unlink()
    with pytest.raises(pt.AdapterFormatError, match=r"adapter\.safetensors: missing"):
        _load(saved)
    with pytest.raises(pt.AdapterFormatError, match="no such adapter directory"):
        _load(saved.parent / "nope")


def test_truncated_weights(saved: Path) -> None:
    data = (saved / "adapter.safetensors").read_bytes()
    (saved / "adapter.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(pt.AdapterFormatError, match="truncated or corrupt"):
        _load(saved)


def test_nan_values(saved: Path) -> None:
    tensors = load_file(str(saved / "adapter.safetensors"))
    tensors["prefix"][0, 0, 0] = float("nan")
    save_file(tensors, str(saved / "adapter.safetensors"))
    with pytest.raises(pt.AdapterFormatError, match="NaN/Inf"):
        _load(saved)


def test_wrong_shapes(saved: Path) -> None:
    tensors = load_file(str(saved / "adapter.safetensors"))
    tensors["prefix"] = tensors["prefix"][:, :2].contiguous()
    save_file(tensors, str(saved / "adapter.safetensors"))
    with pytest.raises(pt.AdapterFormatError, match="has shape"):
        _load(saved)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["config"].update(method="lora"), "method='lora' is unknown"),
        (lambda d: d.update(format_version=99), "format_version 99 is not supported"),
        (lambda d: d.pop("config"), "missing the 'config' object"),
    ],
)
def test_bad_config_json(saved: Path, change, message: str) -> None:
    doc = json.loads((saved / "adapter_config.json").read_text())
    change(doc)
    (saved / "adapter_config.json").write_text(json.dumps(doc))
    with pytest.raises(pt.AdapterFormatError, match=message):
        _load(saved)


def test_invalid_json(saved: Path) -> None:
    (saved / "adapter_config.json").write_text("{not json")
    with pytest.raises(pt.AdapterFormatError, match="not valid JSON"):
        _load(saved)


def test_failed_load_leaves_the_model_unchanged(saved: Path) -> None:
    pm = pt.attach(make_model("llama"), pt.PrefixConfig(method="kv", num_virtual_tokens=2), adapter_name="keep")
    (saved / "adapter_config.json").write_text("{not json")
    with pytest.raises(pt.AdapterFormatError):
        pm.load_adapter(saved, "new")
    assert pm.adapter_names == ["keep"] and pm.active_adapter == "keep"


def test_config_errors_list_every_problem() -> None:
    with pytest.raises(pt.ConfigError) as info:
        pt.PrefixConfig(method="nope", num_virtual_tokens=0, init="text")
    assert len(info.value.problems) == 3


def test_a_config_without_a_method_loads_as_prefix_the_default_it_was_written_under(saved: Path) -> None:
    """`kv` became the default method (issue 14); a config that omits the method meant `prefix` when written."""
    file = saved / "adapter_config.json"
    doc = json.loads(file.read_text())
    del doc["config"]["method"]
    file.write_text(json.dumps(doc))
    loaded = pt.load_adapter(make_model("llama"), saved)
    assert loaded.adapter_config().method == "prefix"
    assert pt.PrefixConfig().method == "kv"


def test_a_config_without_an_init_loads_as_vocab_the_default_it_was_written_under(saved: Path) -> None:
    """'auto' became the default init (issue 14); a config that omits the init meant 'vocab' when written."""
    file = saved / "adapter_config.json"
    doc = json.loads(file.read_text())
    del doc["config"]["init"]
    file.write_text(json.dumps(doc))
    assert pt.load_adapter(make_model("llama"), saved).adapter_config().init == "vocab"
    assert pt.PrefixConfig().init == "auto"
