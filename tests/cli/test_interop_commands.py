"""`prefixtune convert`, `export-kv` and `doctor` end to end on a tiny model saved as an HF directory."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import prefixtune as pt
from prefixtune.cli.main import main
from prefixtune.io.kv_pack import read_kv_pack
from prefixtune.models import load_model
from tests.conftest import batch


@pytest.fixture
def adapter(tmp_path: Path, tiny_llama_dir: Path) -> Path:
    model, _ = load_model(tiny_llama_dir)
    # Random init: an untrained vocab-initialized prefix is, exactly, prompt tuning, and doctor says so.
    pm = pt.attach(model, pt.PrefixConfig(method="prefix", num_virtual_tokens=3, init="random", seed=0))
    return pm.save_adapter(tmp_path / "adapter")


def logits(model_dir: Path, adapter_dir: Path) -> torch.Tensor:
    model, _ = load_model(model_dir)
    ids, mask = batch()
    with torch.no_grad():
        return pt.load_adapter(model, adapter_dir)(input_ids=ids, attention_mask=mask).logits


def test_convert_to_peft_and_back(tmp_path: Path, tiny_llama_dir: Path, adapter: Path, capsys) -> None:
    assert main(["convert", "--to", "peft", str(adapter), str(tmp_path / "peft"), "--model", str(tiny_llama_dir)]) == 0
    assert "wrote PEFT PREFIX_TUNING adapter" in capsys.readouterr().out
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["peft_type"] == "PREFIX_TUNING"
    args = ["convert", "--from", "peft", str(tmp_path / "peft"), str(tmp_path / "back"), "--model", str(tiny_llama_dir)]
    assert main(args) == 0
    assert "method kv" in capsys.readouterr().out
    expected = logits(tiny_llama_dir, adapter)
    assert (logits(tiny_llama_dir, tmp_path / "back") - expected).abs().max() <= 1e-4


def test_convert_refusal_is_one_line_with_a_hint(tmp_path: Path, tiny_llama_dir: Path, adapter: Path, capsys) -> None:
    args = ["convert", "--to", "peft", str(adapter), str(tmp_path / "p"), "--model", str(tiny_llama_dir)]
    assert main([*args, "--peft-type", "PROMPT_TUNING"]) == 2
    err = capsys.readouterr().err
    assert "acts on every layer" in err and err.count("\n") == 2 and "hint:" in err
    assert not (tmp_path / "p").exists()


def test_convert_refuses_a_pickle_only_directory(tmp_path: Path, tiny_llama_dir: Path, capsys) -> None:
    (tmp_path / "peft").mkdir()
    config = {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 2, "num_layers": 3, "token_dim": 16}
    (tmp_path / "peft" / "adapter_config.json").write_text(json.dumps({**config, "num_attention_heads": 2}))
    (tmp_path / "peft" / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    args = ["convert", "--from", "peft", str(tmp_path / "peft"), str(tmp_path / "o"), "--model", str(tiny_llama_dir)]
    assert main(args) == 1
    assert "never loads pickle files" in capsys.readouterr().err


def test_export_kv_writes_a_pack(tmp_path: Path, tiny_llama_dir: Path, adapter: Path, capsys) -> None:
    out = tmp_path / "pack.safetensors"
    args = ["export-kv", str(adapter), str(out), "--model", str(tiny_llama_dir), "--dtype", "float16"]
    assert main(args) == 0
    assert "3 layers x 3 virtual tokens, float16" in capsys.readouterr().out
    pack = read_kv_pack(out)
    assert pack.prefix_kv.dtype == torch.float16 and pack.metadata["method"] == "prefix"


def test_doctor_healthy_exits_0(tiny_llama_dir: Path, adapter: Path, capsys) -> None:
    assert main(["doctor", str(tiny_llama_dir), str(adapter)]) == 0
    assert "healthy" in capsys.readouterr().out


def test_doctor_findings_exit_1_with_json(tiny_llama_dir: Path, adapter: Path, capsys) -> None:
    file = adapter / "adapter.safetensors"
    tensors = load_file(str(file))
    tensors["prefix"] = torch.zeros_like(tensors["prefix"])
    save_file(tensors, str(file))
    assert main(["doctor", str(tiny_llama_dir), str(adapter)]) == 1
    text = capsys.readouterr().out
    assert "[zero_prefix]" in text and "what to do:" in text
    assert main(["doctor", str(tiny_llama_dir), str(adapter), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is False and [f["code"] for f in report["findings"]] == ["zero_prefix"]


def test_doctor_reads_peft_directories(tmp_path: Path, tiny_llama_dir: Path, capsys) -> None:
    peft = pytest.importorskip("peft")
    model, _ = load_model(tiny_llama_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)
        peft.get_peft_model(model, config).save_pretrained(str(tmp_path / "peft"))
    assert main(["doctor", str(tiny_llama_dir), str(tmp_path / "peft"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["facts"]["format"] == "peft"


def test_doctor_missing_adapter_is_an_error(tmp_path: Path, tiny_llama_dir: Path, capsys) -> None:
    assert main(["doctor", str(tiny_llama_dir), str(tmp_path / "nope")]) == 1
    assert "no such adapter directory" in capsys.readouterr().err
