"""`doctor` and `inspect` on encoder-decoder adapters (issue 12): the three sites are understood."""

from __future__ import annotations

import json

import prefixtune as pt
from prefixtune.cli.main import main
from prefixtune.diagnostics.doctor import run_doctor
from tests.seq2seq_models import make_seq2seq, randomize


def saved_seq2seq(tmp_path, sites=("encoder", "cross")):
    pm = pt.attach(make_seq2seq("bart"), pt.PrefixConfig(method="prefix", num_virtual_tokens=3, sites=sites))
    randomize(pm, seed=1)
    return pm.save_adapter(tmp_path / "s2s")


def test_doctor_finds_a_seq2seq_adapter_healthy_and_counts_its_sites(tmp_path) -> None:
    report = run_doctor(make_seq2seq("bart"), saved_seq2seq(tmp_path))
    assert report.is_healthy, report.findings
    assert report.facts["sites"] == {"encoder": 2, "cross": 3} and report.facts["adapter_layers"] == 5


def test_inspect_shows_the_sites(capsys, tmp_path) -> None:
    path = saved_seq2seq(tmp_path, sites=None)
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sites"] == {"encoder": 2, "decoder": 3, "cross": 3}
    assert info["num_layers"] == 8 and len(info["per_layer_norms"]) == 8
    assert info["position_convention"] == "unshifted"
    assert main(["inspect", str(path)]) == 0
    assert "encoder (2 layers), decoder (3 layers), cross (3 layers)" in capsys.readouterr().out
