"""KV pack version 2 (issue 12): an encoder-decoder's pack records the site of every entry; version 1 stays."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import prefixtune as pt
from prefixtune.core import prefix_forward
from prefixtune.io.kv_pack import read_kv_pack, write_kv_pack
from tests.conftest import make_model
from tests.seq2seq_models import make_seq2seq, randomize, seq2seq_batch


def test_seq2seq_pack_round_trips_its_sites(tmp_path: Path) -> None:
    config = pt.PrefixConfig(method="prefix", num_virtual_tokens=3, sites=("decoder", "cross"))
    pm = pt.attach(make_seq2seq("bart"), config)
    randomize(pm, seed=2)
    with torch.no_grad():
        kv = pm.compile()
    pack = read_kv_pack(write_kv_pack(kv, tmp_path / "s2s.safetensors"))
    assert pack.metadata["pack_version"] == 2
    assert pack.prefix_kv.sites == ("decoder",) * 3 + ("cross",) * 3
    assert pack.prefix_kv.position_convention == "unshifted"
    ids, mask, dec, dmask = seq2seq_batch()
    with torch.no_grad():
        expected = pm(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dmask).logits
        got = prefix_forward(
            make_seq2seq("bart"),
            ids,
            prefix_kvs=[pack.prefix_kv] * 3,
            attention_mask=mask,
            decoder_input_ids=dec,
            decoder_attention_mask=dmask,
        ).logits
    assert torch.equal(expected, got)


def test_decoder_only_packs_stay_version_1(tmp_path: Path) -> None:
    pm = pt.attach(make_model("gpt2"), pt.PrefixConfig(method="kv", num_virtual_tokens=2, seed=0))
    path = write_kv_pack(pm.compile(), tmp_path / "p.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
    assert header["pack_version"] == "1" and "sites" not in header
    assert read_kv_pack(path).prefix_kv.sites is None


def test_version_2_without_sites_is_refused(tmp_path: Path) -> None:
    pm = pt.attach(make_seq2seq("t5"), pt.PrefixConfig(method="kv", num_virtual_tokens=2))
    path = write_kv_pack(pm.compile(), tmp_path / "p.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    del header["sites"]
    save_file(tensors, str(tmp_path / "nosites.safetensors"), metadata=header)
    with pytest.raises(pt.AdapterFormatError, match="header is incomplete"):
        read_kv_pack(tmp_path / "nosites.safetensors")
    header["sites"] = '["encoder"]'  # one site name for 6 entries
    save_file(tensors, str(tmp_path / "short.safetensors"), metadata=header)
    with pytest.raises(pt.AdapterFormatError, match="malformed"):
        read_kv_pack(tmp_path / "short.safetensors")


def test_decoder_only_pack_is_refused_on_an_encoder_decoder(tmp_path: Path) -> None:
    pm = pt.attach(make_model("gpt2"), pt.PrefixConfig(method="kv", num_virtual_tokens=2, seed=0))
    pack = read_kv_pack(write_kv_pack(pm.compile(), tmp_path / "p.safetensors"))
    ids, _, dec, _ = seq2seq_batch()
    with pytest.raises(ValueError, match="decoder-only model cannot run on an encoder-decoder"):
        prefix_forward(make_seq2seq("t5"), ids, prefix_kvs=[pack.prefix_kv] * 3, decoder_input_ids=dec)


def test_encoder_decoder_pack_is_refused_on_a_decoder_only_model(tmp_path: Path) -> None:
    pm = pt.attach(make_seq2seq("t5"), pt.PrefixConfig(method="kv", num_virtual_tokens=2))
    pack = read_kv_pack(write_kv_pack(pm.compile(), tmp_path / "p.safetensors"))
    ids = torch.randint(3, 100, (1, 4))
    with pytest.raises(ValueError, match="compiled for an encoder-decoder"):
        prefix_forward(make_model("gpt2"), ids, prefix_kvs=[pack.prefix_kv])
