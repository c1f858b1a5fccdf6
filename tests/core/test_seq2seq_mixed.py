"""Encoder-decoders (issue 12): mixed adapters per row in forward and generate, training, files."""

from __future__ import annotations

import json

import pytest
import torch

import prefixtune as pt
from tests.seq2seq_models import FAMILIES, make_seq2seq, randomize, seq2seq_batch

NAMES = ["a", "b", None, "c"]


def _three_adapters(family: str) -> pt.PrefixModel:
    """'a': kv on every site (m=2); 'b': prefix on decoder + cross (m=5); 'c': kv on the encoder only (m=3)."""
    pm = pt.attach(make_seq2seq(family), pt.PrefixConfig(method="kv", num_virtual_tokens=2), adapter_name="a")
    pm.add_adapter("b", pt.PrefixConfig(method="prefix", num_virtual_tokens=5, sites=("decoder", "cross")))
    pm.add_adapter("c", pt.PrefixConfig(method="kv", num_virtual_tokens=3, sites=("encoder",)))
    for seed, name in enumerate(("a", "b", "c")):
        randomize(pm, name, seed=seed)
    return pm


def _forward(pm, ids, mask, dec, dmask, names):
    with torch.no_grad():
        return pm(
            input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dmask, adapter_names=names
        ).logits


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("padding", ["right", "left"])
def test_mixed_forward_equals_rows_alone(family: str, padding: str) -> None:
    pm = _three_adapters(family)
    ids, mask, dec, dmask = seq2seq_batch(B=4, padding=padding)
    mixed = _forward(pm, ids, mask, dec, dmask, NAMES)
    for r, name in enumerate(NAMES):
        alone = _forward(pm, ids[r : r + 1], mask[r : r + 1], dec[r : r + 1], dmask[r : r + 1], [name])
        keep = dmask[r].bool()
        assert torch.allclose(mixed[r][keep], alone[0][keep], atol=1e-5)
    with torch.no_grad():  # the bare row is the base model
        bare = pm.base_model(input_ids=ids[2:3], attention_mask=mask[2:3], decoder_input_ids=dec[2:3]).logits
    assert torch.allclose(mixed[2][dmask[2].bool()], bare[0][dmask[2].bool()], atol=1e-5)


def _greedy_by_forward(pm, ids, mask, name, steps: int) -> list[int]:
    """No-cache greedy decoding over `forward`, the reference for `generate`."""
    start = pm.base_model.config.decoder_start_token_id
    dec = torch.tensor([[start]])
    for _ in range(steps):
        logits = _forward(pm, ids, mask, dec, None, [name])
        dec = torch.cat([dec, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return dec[0].tolist()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("num_beams", [1, 3])
def test_mixed_generate_equals_rows_alone(family: str, num_beams: int) -> None:
    pm = _three_adapters(family)
    ids, mask, _, _ = seq2seq_batch(B=4, padding="right")
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, num_beams=num_beams, do_sample=False)
    mixed = pm.generate(ids, attention_mask=mask, adapter_names=NAMES, **kwargs)
    for r, name in enumerate(NAMES):
        alone = pm.generate(ids[r : r + 1], attention_mask=mask[r : r + 1], adapter_names=[name], **kwargs)
        assert mixed[r].tolist() == alone[0].tolist()
        if num_beams == 1:  # generate's cached decoding equals a no-cache loop over forward
            n = int(mask[r].sum())
            assert alone[0].tolist() == _greedy_by_forward(pm, ids[r : r + 1, :n], mask[r : r + 1, :n], name, 6)


@pytest.mark.parametrize("family", FAMILIES)
def test_training_changes_the_prefix_only(family: str) -> None:
    pm = pt.attach(make_seq2seq(family), pt.PrefixConfig(method="prefix", num_virtual_tokens=4, seed=0))
    before = {k: v.clone() for k, v in pm.base_model.state_dict().items()}
    ids, mask, dec, dmask = seq2seq_batch(B=3)
    labels = dec.masked_fill(dmask == 0, -100)
    optimizer = torch.optim.Adam(pm.trainable_parameters(), lr=1e-2)
    losses = []
    pm.train()
    for _ in range(8):
        loss = pm(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    after = pm.base_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in pm.base_model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_gives_the_same_gradients(family: str) -> None:
    ids, mask, dec, dmask = seq2seq_batch(B=3)
    labels = dec.masked_fill(dmask == 0, -100)
    grads = []
    for checkpointing in (False, True):
        pm = pt.attach(make_seq2seq(family), pt.PrefixConfig(method="prefix", num_virtual_tokens=3, seed=0))
        randomize(pm, seed=5, scale=0.5)
        if checkpointing:
            pm.gradient_checkpointing_enable()
        pm.train()
        pm(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        grads.append([p.grad.clone() for p in pm.trainable_parameters()])
    for plain, checkpointed in zip(*grads, strict=True):
        assert plain.abs().sum() > 0
        assert torch.allclose(plain, checkpointed, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["kv", "prefix"])
def test_save_load_round_trip(family: str, method: str, tmp_path) -> None:
    pm = pt.attach(
        make_seq2seq(family), pt.PrefixConfig(method=method, num_virtual_tokens=3, sites=("encoder", "cross"))
    )
    randomize(pm, seed=7)
    ids, mask, dec, dmask = seq2seq_batch()
    expected = _forward(pm, ids, mask, dec, dmask, None)
    pm.save_adapter(tmp_path / "s2s")
    saved = json.loads((tmp_path / "s2s" / "adapter_config.json").read_text())
    assert saved["config"]["sites"] == ["encoder", "cross"]
    loaded = pt.load_adapter(make_seq2seq(family), tmp_path / "s2s")
    assert loaded.adapter_config().sites == ("encoder", "cross")
    assert torch.allclose(_forward(loaded, ids, mask, dec, dmask, None), expected, atol=1e-6)


def test_decoder_only_adapter_files_have_no_sites(tmp_path) -> None:
    from tests.conftest import make_model

    pm = pt.attach(make_model("gpt2"), pt.PrefixConfig(method="kv", num_virtual_tokens=2))
    pm.save_adapter(tmp_path / "dec")
    assert "sites" not in json.loads((tmp_path / "dec" / "adapter_config.json").read_text())["config"]
    assert pt.load_adapter(make_model("gpt2"), tmp_path / "dec").adapter_config().sites is None
