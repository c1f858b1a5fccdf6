"""Malformed PEFT directories give clear errors, pickle files are never loaded, and impossible exports refuse."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import prefixtune as pt
from prefixtune.core import ModelGeometry
from prefixtune.io.peft_export import export_peft
from prefixtune.io.peft_format import read_peft_dir
from prefixtune.io.peft_import import import_peft
from tests.conftest import make_model

# PEFT PREFIX_TUNING for the tiny llama (3 layers, 2 kv heads of size 8, so token_dim 16), m = 4
CONFIG = {
    "peft_type": "PREFIX_TUNING",
    "task_type": "CAUSAL_LM",
    "num_virtual_tokens": 4,
    "num_layers": 3,
    "token_dim": 16,
    "num_attention_heads": 2,
    "num_transformer_submodules": 1,
    "prefix_projection": False,
}


def write_peft(directory: Path, config: dict | None = CONFIG, tensors: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (directory / "adapter_config.json").write_text(json.dumps(config))
    if tensors is None:
        tensors = {"prompt_embeddings": torch.randn(4, 3 * 2 * 16)}
    if tensors:
        save_file(tensors, str(directory / "adapter_model.safetensors"))
    return directory


class Boom:
    """Unpickling this writes a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pickle was loaded"))


def load(directory: Path) -> pt.PrefixModel:
    return pt.load_adapter(make_model("llama"), directory)


def test_a_valid_directory_loads(tmp_path: Path) -> None:
    assert load(write_peft(tmp_path / "a")).adapter_config().method == "kv"


def test_missing_config_is_named(tmp_path: Path) -> None:
    directory = write_peft(tmp_path / "a", config=None)
    with pytest.raises(pt.AdapterFormatError, match=r"adapter_config\.json: missing"):
        load(directory)


def test_wrong_tensor_name_is_named(tmp_path: Path) -> None:
    directory = write_peft(tmp_path / "a", tensors={"prefix_encoder.weight": torch.randn(4, 96)})
    with pytest.raises(pt.AdapterFormatError, match=r"expected exactly one tensor named 'prompt_embeddings'.*"):
        load(directory)


def test_wrong_shape_is_named(tmp_path: Path) -> None:
    directory = write_peft(tmp_path / "a", tensors={"prompt_embeddings": torch.randn(4, 95)})
    with pytest.raises(pt.AdapterFormatError, match=r"shape \(4, 95\).*\(4, 96\)"):
        load(directory)


def test_shape_for_another_model_is_named(tmp_path: Path) -> None:
    config = {**CONFIG, "token_dim": 32, "num_attention_heads": 4}  # GPT-2-like, no GQA
    directory = write_peft(tmp_path / "a", config, {"prompt_embeddings": torch.randn(4, 3 * 2 * 32)})
    with pytest.raises(pt.AdapterFormatError, match=r"keys\.0.*shape \(4, 4, 8\).*needs \(2, 4, 8\)"):
        load(directory)


def test_pickle_only_directory_is_refused_without_unpickling(tmp_path: Path) -> None:
    directory = write_peft(tmp_path / "a", tensors={})
    marker = tmp_path / "marker"
    (directory / "adapter_model.bin").write_bytes(pickle.dumps(Boom(marker)))
    with pytest.raises(pt.AdapterFormatError, match=r"adapter_model\.bin, a pickle file.*never loads"):
        load(directory)
    with pytest.raises(pt.AdapterFormatError, match=r"pickle"):
        import_peft(make_model("llama"), directory, tmp_path / "out")
    assert not marker.exists()
    (directory / "adapter_config.json").unlink()  # no config either: still recognized as PEFT, still refused
    with pytest.raises(pt.AdapterFormatError, match=r"adapter_config\.json: missing"):
        read_peft_dir(directory)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"peft_type": "LORA"}, r"peft_type 'LORA' cannot be imported"),
        ({"task_type": "SEQ_2_SEQ_LM"}, r"decoder-only"),
        ({"num_transformer_submodules": 2}, r"encoder-decoder"),
        ({"num_virtual_tokens": 0}, r"num_virtual_tokens=0 must be a positive integer"),
    ],
)
def test_unsupported_configs_are_named(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(pt.AdapterFormatError, match=message):
        load(write_peft(tmp_path / "a", {**CONFIG, **change}))


def test_nan_values_are_refused(tmp_path: Path) -> None:
    values = torch.randn(4, 96)
    values[0, 0] = float("nan")
    with pytest.raises(pt.AdapterFormatError, match=r"1 NaN/Inf values"):
        load(write_peft(tmp_path / "a", tensors={"prompt_embeddings": values}))


def test_export_refuses_prompt_tuning_for_per_layer_methods(tmp_path: Path) -> None:
    pm = pt.attach(make_model("gpt2"), pt.PrefixConfig(method="prefix", num_virtual_tokens=2, seed=0))
    with pytest.raises(pt.ConfigError, match=r"acts on every layer.*PREFIX_TUNING"):
        export_peft(pm, tmp_path / "out", peft_type="PROMPT_TUNING")
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_position_convention_peft_cannot_express(tmp_path: Path) -> None:
    pm = pt.attach(make_model("gpt2"), pt.PrefixConfig(method="kv", num_virtual_tokens=2, seed=0))
    object.__setattr__(pm.adapter_config(), "position_convention", "unshifted")  # a future convention
    with pytest.raises(pt.ConfigError, match=r"position convention 'unshifted' cannot be expressed in PEFT"):
        export_peft(pm, tmp_path / "out")


def test_export_refuses_layers_of_different_kv_shapes(tmp_path: Path) -> None:
    pm = pt.attach(make_model("gpt2"), pt.PrefixConfig(method="kv", num_virtual_tokens=2, seed=0))
    g = pm.geometry
    pm.geometry = ModelGeometry(g.num_layers, g.hidden_size, ((4, 8), (4, 8), (2, 16)))
    with pytest.raises(pt.ConfigError, match=r"different key/value shapes"):
        export_peft(pm, tmp_path / "out")
