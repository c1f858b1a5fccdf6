"""PEFT interop against the installed `peft` package: PEFT -> ours and ours -> PEFT give the same logits."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

import prefixtune as pt
from prefixtune.io.peft_export import export_peft
from prefixtune.io.peft_import import import_peft
from tests.conftest import batch, make_model

peft = pytest.importorskip("peft")
# PEFT 0.21 passes `past_key_values`, deprecated in transformers 5.x (DESIGN.md §5); its forward still works.
pytestmark = pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")

TOLERANCE = 1e-4  # fp32, issue 5


def peft_logits(kind: str, directory: Path, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PEFT's own forward of a saved adapter, real-token positions only (B, n, V)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.PeftModel.from_pretrained(make_model(kind), str(directory)).eval()
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
    return logits[:, -ids.shape[1] :]  # PROMPT_TUNING also returns the m prompt positions


def max_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """Largest difference over real (unpadded) tokens."""
    return float(((a - b) * mask[..., None]).abs().max())


def save_peft(kind: str, directory: Path, config) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(3)
        peft.get_peft_model(make_model(kind), config).save_pretrained(str(directory))
    return directory


def peft_config(peft_type: str, m: int):
    if peft_type == "PREFIX_TUNING":
        return peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=m)
    if peft_type == "PREFIX_PROJECTION":  # PEFT runs the MLP when saving: the file holds projected keys/values
        return peft.PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=m, prefix_projection=True, encoder_hidden_size=16
        )
    return peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=m)


@pytest.mark.parametrize("m", [1, 10])
@pytest.mark.parametrize("peft_type", ["PREFIX_TUNING", "PREFIX_PROJECTION", "PROMPT_TUNING"])
def test_peft_adapter_loads_with_peft_logits(tmp_path: Path, model_kind: str, peft_type: str, m: int) -> None:
    src = save_peft(model_kind, tmp_path / "peft", peft_config(peft_type, m))
    ids, mask = batch()
    expected = peft_logits(model_kind, src, ids, mask)
    pm = pt.load_adapter(make_model(model_kind), src)  # a PEFT directory, directly
    with torch.no_grad():
        got = pm(input_ids=ids, attention_mask=mask).logits
        bare = make_model(model_kind)(input_ids=ids, attention_mask=mask).logits
    assert max_diff(got, expected, mask) <= TOLERANCE
    assert max_diff(got, bare, mask) > 1e-3  # the prefix really acts
    assert pm.adapter_config().method == ("prompt" if peft_type == "PROMPT_TUNING" else "kv")
    assert pm.adapter_config().position_convention == "shifted"
    assert pm.adapter_config().init == "random"  # how PEFT started it (its default), recorded, not rerun
    assert pm.adapter_metadata()["imported_from"]["format"] == "peft"


def test_an_imported_prompt_records_peft_s_own_init(tmp_path: Path) -> None:
    src = save_peft("gpt2", tmp_path / "peft", peft_config("PROMPT_TUNING", 3))
    file = src / "adapter_config.json"
    cases = [("TEXT", "a review:", ("text", "a review:")), ("SAMPLE_VOCAB", None, ("vocab", None))]
    for choice, text, expected in cases:
        doc = json.loads(file.read_text())
        file.write_text(json.dumps({**doc, "prompt_tuning_init": choice, "prompt_tuning_init_text": text}))
        config = pt.load_adapter(make_model("gpt2"), src).adapter_config()
        assert (config.init, config.init_text) == expected


def test_import_writes_an_adapter_that_loads_with_the_same_logits(tmp_path: Path, model_kind: str) -> None:
    src = save_peft(model_kind, tmp_path / "peft", peft_config("PREFIX_TUNING", 4))
    dst = import_peft(make_model(model_kind), src, tmp_path / "ours")
    doc = json.loads((dst / "adapter_config.json").read_text())
    assert doc["method"] == "kv" and doc["base_model_fingerprint"] is not None
    ids, mask = batch()
    with torch.no_grad():
        got = pt.load_adapter(make_model(model_kind), dst)(input_ids=ids, attention_mask=mask).logits
    assert max_diff(got, peft_logits(model_kind, src, ids, mask), mask) <= TOLERANCE


@pytest.mark.parametrize("m", [1, 10])
@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_export_loads_in_peft_with_our_logits(tmp_path: Path, model_kind: str, method: str, m: int) -> None:
    pm = pt.attach(make_model(model_kind), pt.PrefixConfig(method=method, num_virtual_tokens=m, seed=0))
    ids, mask = batch()
    with torch.no_grad():
        ours = pm(input_ids=ids, attention_mask=mask).logits
    types = ["PROMPT_TUNING", "PREFIX_TUNING"] if method == "prompt" else ["PREFIX_TUNING"]
    for peft_type in types:
        dst = export_peft(pm, tmp_path / peft_type, peft_type=peft_type)
        assert json.loads((dst / "adapter_config.json").read_text())["peft_type"] == peft_type
        assert max_diff(ours, peft_logits(model_kind, dst, ids, mask), mask) <= TOLERANCE


def test_export_default_type_follows_the_method(tmp_path: Path) -> None:
    pm = pt.attach(make_model("gpt2"), pt.PrefixConfig(method="prompt", num_virtual_tokens=2, seed=0))
    pm.add_adapter("kv", pt.PrefixConfig(method="kv", num_virtual_tokens=2, seed=0))
    assert json.loads((export_peft(pm, tmp_path / "p") / "adapter_config.json").read_text())["peft_type"] == (
        "PROMPT_TUNING"
    )
    assert json.loads((export_peft(pm, tmp_path / "k", "kv") / "adapter_config.json").read_text())["peft_type"] == (
        "PREFIX_TUNING"
    )


def test_export_then_import_round_trips_exactly(tmp_path: Path) -> None:
    pm = pt.attach(make_model("llama"), pt.PrefixConfig(method="kv", num_virtual_tokens=3, seed=0))
    back = pt.load_adapter(make_model("llama"), export_peft(pm, tmp_path / "peft"))
    for a, b in zip(pm.compile().keys + pm.compile().values, back.compile().keys + back.compile().values, strict=True):
        assert torch.equal(a, b)


def test_imported_adapter_generates_what_peft_forward_predicts(tmp_path: Path) -> None:
    """Greedy `generate` of the imported adapter equals a no-cache greedy loop over PEFT's own forward."""
    src = save_peft("llama", tmp_path / "peft", peft_config("PREFIX_TUNING", 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = peft.PeftModel.from_pretrained(make_model("llama"), str(src)).eval()
    ids = torch.randint(3, 128, (1, 6), generator=torch.Generator().manual_seed(0))
    expected = ids
    with torch.no_grad():
        for _ in range(6):
            next_id = reference(input_ids=expected, attention_mask=torch.ones_like(expected)).logits[:, -1].argmax(-1)
            expected = torch.cat([expected, next_id[:, None]], dim=1)
    pm = pt.load_adapter(make_model("llama"), src)
    got = pm.generate(ids, torch.ones_like(ids), max_new_tokens=6, do_sample=False, eos_token_id=None)
    assert torch.equal(got, expected)
