"""Interop and CLI without needless requirements (issue 11, item 8): `convert --to peft` and `export-kv` of a
`kv` adapter load no base model; commands that need no tokenizer accept a model directory without one; an
adapter used with the wrong base model is said to be one before any shape error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import prefixtune as pt
import prefixtune.models
from prefixtune.cli.main import main
from prefixtune.errors import ConfigError
from prefixtune.io.kv_pack import read_kv_pack
from prefixtune.models import load_base_model, load_model


@pytest.fixture
def kv_adapter(tmp_path: Path, tiny_llama_dir: Path) -> Path:
    model, _ = load_model(tiny_llama_dir)
    pm = pt.attach(model, pt.PrefixConfig(method="kv", num_virtual_tokens=3, init="random", seed=0))
    return pm.save_adapter(tmp_path / "kv-adapter")


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a base model was loaded")

    monkeypatch.setattr(prefixtune.models, "load_model", refuse)
    monkeypatch.setattr(prefixtune.models, "load_base_model", refuse)


def test_convert_a_kv_adapter_to_peft_needs_no_base_model(tmp_path, tiny_llama_dir, kv_adapter, monkeypatch, capsys):
    assert (
        main(["convert", "--to", "peft", str(kv_adapter), str(tmp_path / "with"), "--model", str(tiny_llama_dir)]) == 0
    )
    with monkeypatch.context() as patch:
        patch.setattr(prefixtune.models, "load_base_model", lambda *a, **k: pytest.fail("a base model was loaded"))
        assert main(["convert", "--to", "peft", str(kv_adapter), str(tmp_path / "without")]) == 0
    assert "no base model needed" in capsys.readouterr().out
    with_model = json.loads((tmp_path / "with" / "adapter_config.json").read_text())
    without = json.loads((tmp_path / "without" / "adapter_config.json").read_text())
    with_model.pop("base_model_name_or_path"), without.pop("base_model_name_or_path")
    assert without == with_model
    a, b = (load_file(str(tmp_path / d / "adapter_model.safetensors")) for d in ("with", "without"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_kv_of_a_kv_adapter_needs_no_base_model(tmp_path, tiny_llama_dir, kv_adapter, no_model_loads):
    assert main(["export-kv", str(kv_adapter), str(tmp_path / "pack.safetensors")]) == 0
    pack = read_kv_pack(tmp_path / "pack.safetensors").prefix_kv
    saved = load_file(str(kv_adapter / "adapter.safetensors"))
    assert all(torch.equal(pack.keys[i], saved[f"keys.{i}"]) for i in range(pack.num_layers))
    assert pack.fingerprint == json.loads((kv_adapter / "adapter_config.json").read_text())["base_model_fingerprint"]


@pytest.fixture
def model_without_tokenizer(tmp_path: Path, tiny_llama_dir: Path) -> Path:
    directory = tmp_path / "no-tokenizer"
    directory.mkdir()
    for file in tiny_llama_dir.iterdir():
        if "token" not in file.name and file.name not in ("vocab.json", "merges.txt"):
            shutil.copy(file, directory / file.name)
    return directory


def test_commands_that_need_no_tokenizer_accept_a_model_without_one(
    tmp_path, tiny_llama_dir, kv_adapter, model_without_tokenizer
):
    model, _ = load_model(tiny_llama_dir)
    prefix = pt.attach(model, pt.PrefixConfig(num_virtual_tokens=3, init="random", seed=0)).save_adapter(tmp_path / "p")
    bare = str(model_without_tokenizer)
    assert main(["convert", "--to", "peft", str(prefix), str(tmp_path / "peft"), "--model", bare]) == 0
    assert main(["export-kv", str(prefix), str(tmp_path / "p.safetensors"), "--model", bare]) == 0
    assert main(["convert", "--from", "peft", str(tmp_path / "peft"), str(tmp_path / "back"), "--model", bare]) == 0
    assert main(["doctor", bare, str(prefix)]) in (0, 1)
    assert load_base_model(bare).config.num_hidden_layers == model.config.num_hidden_layers
    # A command that needs the tokenizer says so, instead of transformers' sentencepiece/tiktoken message.
    with pytest.raises(ConfigError, match="has no tokenizer files"):
        load_model(bare)


def test_an_adapter_for_another_base_model_says_so_before_shapes(tmp_path, tiny_gpt2_dir, kv_adapter, capsys):
    # Before: the shapes were checked first, so a llama adapter on GPT-2 was reported as a tensor shape error.
    code = main(["export-kv", str(kv_adapter), str(tmp_path / "x.safetensors"), "--model", str(tiny_gpt2_dir)])
    assert code != 0
    assert "the adapter was made for another base model:" in capsys.readouterr().err
