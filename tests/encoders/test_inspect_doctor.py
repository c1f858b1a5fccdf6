"""`inspect` and `doctor` on encoder adapters: parameter counts by part, the head, the convention."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from prefixtune.cli.inspect import _text, describe
from prefixtune.diagnostics import run_doctor
from tests.encoders.models import make_encoder


@pytest.fixture
def head_adapter(tmp_path):
    # init="random": an untrained vocab-init prefix is fine too, but random is what training leaves
    config = pt.PrefixConfig(
        method="prefix", num_virtual_tokens=3, init="random", seed=0, train_head=True, position_convention="unshifted"
    )
    return pt.attach(make_encoder("bert", "seq", num_labels=5), config).save_adapter(tmp_path / "a")


def test_inspect_counts_parameters_by_part(head_adapter) -> None:
    info = describe(str(head_adapter))
    assert info["parameters_by_part"] == {"prefix": 2 * 3 * 32, "head": 5 * 32 + 5}
    assert info["num_parameters"] == 2 * 3 * 32 + 5 * 32 + 5
    assert info["train_head"] is True and info["head"] == {"classifier.bias": [5], "classifier.weight": [5, 32]}
    assert info["position_convention"] == "unshifted"
    text = _text(info)
    assert "357 (prefix 192, head 165)" in text and "task head" in text


def test_doctor_accepts_the_adapter_on_its_encoder_with_any_head_weights(head_adapter) -> None:
    model = make_encoder("bert", "seq", num_labels=5)
    with torch.no_grad():
        model.classifier.weight.mul_(-3.0)  # a head drawn anew at load: unused by an adapter with its own
    report = run_doctor(model, head_adapter)
    assert report.is_healthy, report.findings
    assert report.facts["head_parameters"] == 165 and report.facts["model_family"] == "bert"


def test_doctor_reports_a_head_that_does_not_fit(head_adapter) -> None:
    # the bare encoder (no head at all), and a head for 2 labels instead of 5
    for model in (make_encoder("bert", "base"), make_encoder("bert", "seq", num_labels=2)):
        codes = [f.code for f in run_doctor(model, head_adapter).findings]
        assert codes == ["head_mismatch"]


def test_doctor_reports_unshifted_on_a_rotary_encoder(head_adapter) -> None:
    findings = run_doctor(make_encoder("modernbert", "seq", num_labels=5), head_adapter).findings
    assert "position_convention" in [f.code for f in findings]
