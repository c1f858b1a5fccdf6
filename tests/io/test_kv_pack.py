"""The KV pack: what goes in comes back, it drives the model like the adapter, and bad files are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import prefixtune as pt
from prefixtune.core.inject import prefix_forward
from prefixtune.io.kv_pack import read_kv_pack, write_kv_pack
from tests.conftest import batch, make_model


@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_pack_drives_the_model_like_the_adapter(tmp_path: Path, model_kind: str, method: str) -> None:
    pm = pt.attach(make_model(model_kind), pt.PrefixConfig(method=method, num_virtual_tokens=5, seed=0))
    with torch.no_grad():
        kv = pm.compile()
    pack = read_kv_pack(write_kv_pack(kv, tmp_path / "p.safetensors", adapter_name="default"))
    for a, b in zip(kv.keys + kv.values, pack.prefix_kv.keys + pack.prefix_kv.values, strict=True):
        assert torch.equal(a, b)
    ids, mask = batch()
    with torch.no_grad():
        expected = pm(input_ids=ids, attention_mask=mask).logits
        got = prefix_forward(make_model(model_kind), ids, prefix_kvs=[pack.prefix_kv] * 3, attention_mask=mask).logits
    assert torch.equal(expected, got)
    assert pack.prefix_kv.method == method


def test_header_says_how_to_use_the_pack(tmp_path: Path) -> None:
    pm = pt.attach(make_model("llama"), pt.PrefixConfig(method="prefix", num_virtual_tokens=3, seed=0))
    with torch.no_grad():
        kv = pm.compile()
    meta = read_kv_pack(write_kv_pack(kv, tmp_path / "p.safetensors", dtype="bfloat16")).metadata
    assert meta["pack_version"] == 1 and meta["num_layers"] == 3 and meta["num_virtual_tokens"] == 3
    assert meta["kv_shapes"] == [[2, 8]] * 3
    assert meta["dtype"] == "bfloat16" and meta["position_convention"] == "shifted"
    assert meta["base_model_fingerprint"] == pm.base_fingerprint()
    assert "num_virtual_tokens + j" in meta["real_token_positions"]
    with safe_open(str(tmp_path / "p.safetensors"), framework="pt") as handle:
        assert handle.get_tensor("keys.0").dtype == torch.bfloat16
        assert tuple(handle.get_tensor("values.2").shape) == (2, 3, 8)


def test_unknown_dtype_is_refused(tmp_path: Path) -> None:
    pm = pt.attach(make_model("gpt2"), pt.PrefixConfig(method="kv", num_virtual_tokens=2, seed=0))
    with pytest.raises(pt.AdapterFormatError, match=r"dtype 'int8' is not supported.*float32"):
        write_kv_pack(pm.compile(), tmp_path / "p.safetensors", dtype="int8")
    assert list(tmp_path.iterdir()) == []


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(pt.AdapterFormatError, match="no such KV pack"):
        read_kv_pack(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(pt.AdapterFormatError, match="truncated or corrupt"):
        read_kv_pack(tmp_path / "junk.safetensors")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(pt.AdapterFormatError, match="not a prefixtune KV pack"):
        read_kv_pack(tmp_path / "other.safetensors")


def test_missing_layer_and_future_version_are_named(tmp_path: Path) -> None:
    pm = pt.attach(make_model("gpt2"), pt.PrefixConfig(method="kv", num_virtual_tokens=2, seed=0))
    path = write_kv_pack(pm.compile(), tmp_path / "p.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    del tensors["values.1"]
    save_file(tensors, str(tmp_path / "cut.safetensors"), metadata=header)
    with pytest.raises(pt.AdapterFormatError, match="layers are missing"):
        read_kv_pack(tmp_path / "cut.safetensors")
    save_file(tensors, str(tmp_path / "future.safetensors"), metadata={**header, "pack_version": "9"})
    with pytest.raises(pt.AdapterFormatError, match="version '9' is not supported"):
        read_kv_pack(tmp_path / "future.safetensors")
    assert json.loads(header["kv_shapes"]) == [[4, 8]] * 3
