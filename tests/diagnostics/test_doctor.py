"""`run_doctor`: a healthy adapter gives no findings; every finding is produced by a deliberately broken one."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import prefixtune as pt
from prefixtune.diagnostics import CODES, run_doctor
from tests.conftest import VOCAB, make_model


def save(tmp_path: Path, method: str, kind: str = "llama", m: int = 4, model=None) -> Path:
    pm = pt.attach(
        model or make_model(kind), pt.PrefixConfig(method=method, num_virtual_tokens=m, init="random", seed=0)
    )
    return pm.save_adapter(tmp_path / method)


def edit_tensors(directory: Path, change) -> Path:
    """Rewrite adapter.safetensors with `change(tensors)` applied (bypassing every check, as damage would)."""
    file = directory / "adapter.safetensors"
    tensors = load_file(str(file))
    change(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(file))
    return directory


def codes(model, directory: Path) -> list[str]:
    return [f.code for f in run_doctor(model, directory).findings]


@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_healthy_adapter_has_no_findings(tmp_path: Path, model_kind: str, method: str) -> None:
    report = run_doctor(make_model(model_kind), save(tmp_path, method, model_kind))
    assert report.is_healthy, report.findings
    assert report.facts["method"] == method and report.facts["num_virtual_tokens"] == 4
    assert json.loads(json.dumps(report.to_dict()))["healthy"] is True


def test_healthy_peft_adapter_has_no_findings(tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(
            make_model("llama"), peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)
        )
        model.save_pretrained(str(tmp_path / "peft"))
    report = run_doctor(make_model("llama"), tmp_path / "peft")
    assert report.is_healthy, report.findings
    assert report.facts["format"] == "peft" and report.facts["method"] == "kv"


def test_fingerprint_mismatch(tmp_path: Path) -> None:
    directory = save(tmp_path, "kv")
    findings = run_doctor(make_model("llama", seed=1), directory).findings
    assert [f.code for f in findings] == ["fingerprint_mismatch"]
    assert "trained on another base model" in findings[0].message and "weights differ" in findings[0].message


def test_layer_count_mismatch(tmp_path: Path) -> None:
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=256)
    directory = save(tmp_path, "prefix", model=transformers.GPT2LMHeadModel(config).eval())
    report = run_doctor(make_model("gpt2"), directory)
    assert {"layer_count_mismatch", "fingerprint_mismatch"} <= {f.code for f in report.findings}
    message = next(f.message for f in report.findings if f.code == "layer_count_mismatch")
    assert "prefixes for 2 layers, but the model has 3 layers" in message


def test_width_mismatch_of_kv_heads(tmp_path: Path) -> None:
    directory = save(tmp_path, "kv", "gpt2")  # 4 kv heads of 8; the llama has 2 of 8
    report = run_doctor(make_model("llama"), directory)
    message = next(f.message for f in report.findings if f.code == "width_mismatch")
    assert "4 heads of size 8" in message and "2 key/value heads of size 8" in message


def test_width_mismatch_of_hidden_size(tmp_path: Path) -> None:
    directory = edit_tensors(save(tmp_path, "prefix"), lambda t: t.update(prefix=torch.randn(3, 4, 48)))
    assert "width_mismatch" in codes(make_model("llama"), directory)


def test_nan_is_reported_although_the_loader_refuses_it(tmp_path: Path) -> None:
    def poison(tensors):
        tensors["keys.1"][0, 0, 0] = float("nan")
        tensors["values.2"][0, 0, :2] = float("inf")

    directory = edit_tensors(save(tmp_path, "kv"), poison)
    with pytest.raises(pt.AdapterFormatError, match="NaN/Inf"):
        pt.load_adapter(make_model("llama"), directory)
    findings = run_doctor(make_model("llama"), directory).findings
    assert [f.code for f in findings] == ["non_finite"]
    assert "3 NaN/Inf values in 2 tensors" in findings[0].message


def test_prefix_shared_by_all_layers(tmp_path: Path) -> None:
    def share(tensors):
        tensors["prefix"] = tensors["prefix"][:1].expand(3, -1, -1).clone()

    assert codes(make_model("llama"), edit_tensors(save(tmp_path, "prefix"), share)) == ["shared_prefix"]


def test_shared_kv_prefix(tmp_path: Path) -> None:
    def share(tensors):
        for i in (1, 2):
            tensors[f"keys.{i}"], tensors[f"values.{i}"] = tensors["keys.0"].clone(), tensors["values.0"].clone()

    assert codes(make_model("llama"), edit_tensors(save(tmp_path, "kv"), share)) == ["shared_prefix"]


@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_all_zero_adapter(tmp_path: Path, method: str) -> None:
    directory = edit_tensors(save(tmp_path, method), lambda t: t.update({k: torch.zeros_like(v) for k, v in t.items()}))
    findings = run_doctor(make_model("llama"), directory).findings
    assert [f.code for f in findings] == ["zero_prefix"]
    assert "never trained" in findings[0].message


def test_some_zero_layers(tmp_path: Path) -> None:
    directory = edit_tensors(save(tmp_path, "prefix"), lambda t: t["prefix"][1:].zero_())
    findings = run_doctor(make_model("llama"), directory).findings
    assert [f.code for f in findings] == ["zero_prefix"]
    assert "layers [1, 2]" in findings[0].message


def test_peft_zero_initialized_adapter(tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    config = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, init_weights="zero")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft.get_peft_model(make_model("gpt2"), config).save_pretrained(str(tmp_path / "peft"))
    assert codes(make_model("gpt2"), tmp_path / "peft") == ["zero_prefix"]


def test_prefix_that_only_acts_at_the_embedding_layer(tmp_path: Path, model_kind: str) -> None:
    model = make_model(model_kind)
    ids = torch.randint(3, VOCAB, (1, 4), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the states a prompt of these tokens has at every layer's input: prompt tuning
        states = model(input_ids=ids, output_hidden_states=True).hidden_states
    carried = torch.stack(states[:3])[:, 0]  # (L, m, d)
    directory = edit_tensors(save(tmp_path, "prefix", model_kind), lambda t: t.update(prefix=carried))
    findings = run_doctor(make_model(model_kind), directory).findings
    assert [f.code for f in findings] == ["embedding_only"]
    assert "prompt tuning" in findings[0].message


def test_unknown_position_convention(tmp_path: Path) -> None:
    directory = save(tmp_path, "kv")
    document = json.loads((directory / "adapter_config.json").read_text())
    document["config"]["position_convention"] = "unshifted"
    (directory / "adapter_config.json").write_text(json.dumps(document))
    findings = run_doctor(make_model("llama"), directory).findings
    assert [f.code for f in findings] == ["position_convention"]
    assert "'unshifted'" in findings[0].message


def test_prefix_longer_than_the_model_positions(tmp_path: Path) -> None:
    def short_gpt2():
        torch.manual_seed(0)
        config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=8)
        return transformers.GPT2LMHeadModel(config).eval()

    directory = save(tmp_path, "kv", m=8, model=short_gpt2())
    findings = run_doctor(short_gpt2(), directory).findings
    assert [f.code for f in findings] == ["position_convention"]
    assert "only 8 positions" in findings[0].message


def test_every_code_is_covered_by_a_test() -> None:
    source = Path(__file__).read_text()
    assert all(f'"{code}"' in source for code in CODES)


def test_unreadable_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(pt.AdapterFormatError, match="no such adapter directory"):
        run_doctor(make_model("gpt2"), tmp_path / "missing")


def test_tensors_that_do_not_fit_the_method_are_an_error(tmp_path: Path) -> None:
    directory = edit_tensors(save(tmp_path, "prefix"), lambda t: t.update(prefix=torch.zeros(3, 4)))
    with pytest.raises(pt.AdapterFormatError, match=r"stores one 3-D tensor 'prefix', found \{'prefix': \(3, 4\)\}"):
        run_doctor(make_model("llama"), directory)


def test_an_encoder_head_that_does_not_fit(tmp_path: Path) -> None:
    from tests.encoders.models import make_encoder

    config = pt.PrefixConfig(num_virtual_tokens=2, init="random", seed=0, train_head=True)
    directory = pt.attach(make_encoder("bert", "seq", num_labels=3), config).save_adapter(tmp_path / "a")
    findings = run_doctor(make_encoder("bert", "seq", num_labels=2), directory).findings
    assert [f.code for f in findings] == ["head_mismatch"]
    assert "classifier.bias (3,) vs (2,)" in findings[0].message


def test_sites_on_a_decoder_only_model(tmp_path: Path) -> None:
    from tests.diagnostics.test_seq2seq_doctor import saved_seq2seq

    findings = run_doctor(make_model("gpt2"), saved_seq2seq(tmp_path)).findings
    assert [f.code for f in findings][:1] == ["sites_mismatch"]
    assert "decoder-only" in findings[0].message
