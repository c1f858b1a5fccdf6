"""The vLLM workers' adapter store and the front-end's pack compiler, without an engine (no vLLM needed):
layout and tensor-parallel slicing, the LRU budget, refusals that leave the store as it was, and
content-addressed packs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import prefixtune as pt
from prefixtune.errors import AdapterFormatError, IncompatibleBaseModelError
from prefixtune.io.kv_pack import write_kv_pack
from prefixtune.vllm.addressing import pack_path
from prefixtune.vllm.compiler import VllmAdapterCompiler
from prefixtune.vllm.device_store import DeviceKVStore, ServedGeometry, read_num_virtual_tokens
from tests.conftest import make_model

GEOMETRY = ServedGeometry(num_layers=3, num_kv_heads=2, local_kv_heads=2, head_size=8)  # the tiny Llama


def compiled(m: int, seed: int, model=None) -> pt.PrefixKV:
    pm = pt.attach(model or make_model("llama"), pt.PrefixConfig(method="kv", num_virtual_tokens=m), adapter_name="a")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pm.adapters["a"].parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        return pm.compile("a").detach()


def store_with(tmp_path: Path, packs: dict[str, pt.PrefixKV], geometry=GEOMETRY, budget=1 << 30) -> DeviceKVStore:
    for name, kv in packs.items():
        write_kv_pack(kv, pack_path(tmp_path, name))
    return DeviceKVStore(tmp_path, geometry, torch.device("cpu"), torch.float32, budget)


def test_layout_and_tensor_parallel_slices(tmp_path) -> None:
    kv = compiled(5, 0)
    store = store_with(tmp_path, {"a": kv})
    whole = store.get("a")
    assert whole.num_virtual_tokens == 5 and read_num_virtual_tokens(tmp_path, "a") == 5
    for layer in range(3):
        assert torch.equal(whole.keys[layer], kv.keys[layer].transpose(0, 1))  # (m, H_kv, D)
        assert torch.equal(whole.values[layer], kv.values[layer].transpose(0, 1))
    for rank in (0, 1):  # 2 kv heads over 2 ranks: one each
        geometry = ServedGeometry(3, 2, 1, 8, tp_rank=rank, tp_size=2)
        part = DeviceKVStore(tmp_path, geometry, torch.device("cpu"), torch.float32, 1 << 30).get("a")
        assert torch.equal(part.keys[1], kv.keys[1][rank : rank + 1].transpose(0, 1))
    for rank in range(4):  # 2 kv heads over 4 ranks: vLLM replicates, rank r holds head r * 2 // 4
        geometry = ServedGeometry(3, 2, 1, 8, tp_rank=rank, tp_size=4)
        part = DeviceKVStore(tmp_path, geometry, torch.device("cpu"), torch.float32, 1 << 30).get("a")
        head = rank * 2 // 4
        assert torch.equal(part.values[2], kv.values[2][head : head + 1].transpose(0, 1))


def test_lru_keeps_what_fits_and_reads_a_resident_adapter_once(tmp_path) -> None:
    packs = {name: compiled(4, i) for i, name in enumerate(("a", "b", "c"))}
    one = 2 * 3 * 4 * 2 * 8 * 4  # keys + values, 3 layers, m=4, 2 heads, D=8, fp32
    store = store_with(tmp_path, packs, budget=2 * one)
    store.get("a"), store.get("b"), store.get("a")
    assert store.num_loads == 2
    store.get("c")  # evicts b, the least recently used
    assert "a" in store and "c" in store and "b" not in store
    assert store.nbytes <= 2 * one


@pytest.mark.parametrize("case", ["layers", "heads", "head_size", "nan", "missing", "bad id"])
def test_bad_packs_are_refused_and_change_nothing(tmp_path, case) -> None:
    good, kv = compiled(3, 0), compiled(3, 1)
    geometry = {
        "layers": ServedGeometry(4, 2, 2, 8),
        "heads": ServedGeometry(3, 4, 4, 8),
        "head_size": ServedGeometry(3, 2, 2, 16),
    }.get(case, GEOMETRY)
    if case == "nan":
        kv.keys[1][0, 0, 0] = float("nan")
    store = store_with(tmp_path, {"good": good, "x": kv}, geometry=geometry)
    if case not in ("layers", "heads", "head_size"):
        store.get("good")
    name = {"missing": "nope", "bad id": "../x"}.get(case, "x")
    with pytest.raises(AdapterFormatError):
        store.get(name)
    assert name not in store
    assert store.num_loads == (0 if case in ("layers", "heads", "head_size") else 1)


def save(model, path: Path, seed: int) -> Path:
    pm = pt.attach(model, pt.PrefixConfig(method="prefix", num_virtual_tokens=3), adapter_name="a")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pm.adapters["a"].parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    pm.save_adapter(path, "a")
    return path


def test_packs_are_content_addressed(tmp_path) -> None:
    compiler = VllmAdapterCompiler(make_model("llama"), tmp_path / "kv")
    a = compiler.compile(save(make_model("llama"), tmp_path / "a", seed=1))
    again = compiler.compile(tmp_path / "a")
    assert again.adapter_id == a.adapter_id and a.num_virtual_tokens == 3
    changed = compiler.compile(save(make_model("llama"), tmp_path / "a", seed=2))
    assert changed.adapter_id != a.adapter_id
    assert sorted(p.name for p in (tmp_path / "kv").iterdir()) == sorted(
        f"{x.adapter_id}.kv.safetensors" for x in (a, changed)
    )
    pm = pt.load_adapter(make_model("llama"), tmp_path / "a", adapter_name="a")
    written = DeviceKVStore(tmp_path / "kv", GEOMETRY, torch.device("cpu"), torch.float32, 1 << 30)
    with torch.no_grad():
        assert torch.allclose(written.get(changed.adapter_id).keys[2], pm.compile("a").keys[2].transpose(0, 1))


def test_a_directory_holding_only_a_kv_pack_is_an_adapter(tmp_path) -> None:
    compiler = VllmAdapterCompiler(make_model("llama"), tmp_path / "kv")
    (tmp_path / "packed").mkdir()
    write_kv_pack(compiled(6, 0), tmp_path / "packed" / "packed.kv.safetensors")
    spec = compiler.inspect(tmp_path / "packed")
    assert (spec.method, spec.num_virtual_tokens) == ("kv", 6)
    assert compiler.compile(tmp_path / "packed").num_virtual_tokens == 6
    (tmp_path / "other").mkdir()
    write_kv_pack(compiled(6, 0, model=make_model("llama", seed=1)), tmp_path / "other" / "o.kv.safetensors")
    with pytest.raises(IncompatibleBaseModelError, match="another base model"):
        compiler.inspect(tmp_path / "other")
