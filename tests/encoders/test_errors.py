"""Encoders: what is refused, with errors that say what is wrong and what to do."""

from __future__ import annotations

import pytest
import torch
import transformers

import prefixtune as pt
from prefixtune.errors import AdapterFormatError, ConfigError, UnsupportedModelError
from tests.conftest import VOCAB, make_model
from tests.encoders.models import make_encoder

SMALL = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (lambda: transformers.DistilBertForSequenceClassification(
            transformers.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64)
        ), r"model_type 'distilbert'\) is an encoder of a family prefixtune does not support"),
        (lambda: transformers.DebertaV2ForSequenceClassification(
            transformers.DebertaV2Config(**SMALL, intermediate_size=64)
        ), "does not go through transformers' AttentionInterface"),
    ],
)  # fmt: skip
def test_unsupported_encoders_are_refused_and_left_as_they_were(model, match: str) -> None:
    model = model()
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    implementation = model.config._attn_implementation
    with pytest.raises(UnsupportedModelError, match=match):
        pt.attach(model, pt.PrefixConfig(num_virtual_tokens=2))
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert model.config._attn_implementation == implementation


def test_unshifted_needs_learned_absolute_positions() -> None:
    config = pt.PrefixConfig(num_virtual_tokens=2, position_convention="unshifted")
    for model in (make_encoder("modernbert"), make_model("gpt2")):
        with pytest.raises(ConfigError, match="'unshifted' needs an encoder with learned absolute positions"):
            pt.attach(model, config)


def test_a_prompt_cannot_be_unshifted() -> None:
    with pytest.raises(ConfigError, match="a soft prompt enters at the token embeddings"):
        pt.PrefixConfig(method="prompt", position_convention="unshifted")


@pytest.mark.parametrize("make", [lambda: make_encoder("bert", "base"), lambda: make_model("llama")])
def test_train_head_needs_a_task_head(make) -> None:
    with pytest.raises(ConfigError, match="train_head=True needs an encoder with a task head"):
        pt.attach(make(), pt.PrefixConfig(num_virtual_tokens=2, train_head=True))


def test_a_head_for_another_number_of_labels_is_refused(tmp_path) -> None:
    pm = pt.attach(make_encoder("bert", num_labels=3), pt.PrefixConfig(num_virtual_tokens=2, train_head=True))
    pm.save_adapter(tmp_path / "a")
    with pytest.raises(
        AdapterFormatError, match=r"head tensor 'classifier.bias' has shape \(3,\), but this model's is \(2,\)"
    ):
        pt.load_adapter(make_encoder("bert", num_labels=2), tmp_path / "a", check_fingerprint=False)


def test_a_missing_head_file_is_refused(tmp_path) -> None:
    pm = pt.attach(make_encoder("bert"), pt.PrefixConfig(num_virtual_tokens=2, train_head=True))
    (pm.save_adapter(tmp_path / "a") / "head.safetensors").unlink()
    with pytest.raises(AdapterFormatError, match=r"head\.safetensors: missing; the adapter trains its task head"):
        pt.load_adapter(make_encoder("bert"), tmp_path / "a")


def test_an_encoder_prompt_batch_of_other_rows_is_refused() -> None:
    pm = pt.attach(make_encoder("bert"), pt.PrefixConfig(method="prompt", num_virtual_tokens=2))
    with pytest.raises(ConfigError, match="adapter_names has 1 entries for a batch of 2 rows"):
        pm(input_ids=torch.ones(2, 3, dtype=torch.long), adapter_names=["default"])


def test_encoder_adapters_refuse_formats_that_cannot_hold_them(tmp_path) -> None:
    """A soft prompt on an encoder has no per-layer keys/values (they depend on the input), and PEFT's
    configs written here are causal-LM ones: both exports refuse with a reason instead of writing a file."""
    from prefixtune.io.kv_pack import write_kv_pack
    from prefixtune.io.peft_export import export_peft

    pm = pt.attach(make_encoder("bert"), pt.PrefixConfig(method="prompt", num_virtual_tokens=2, init="random", seed=0))
    with pytest.raises(AdapterFormatError, match="soft prompt on an encoder"):
        write_kv_pack(pm.compile(), tmp_path / "p.kv.safetensors")
    assert not (tmp_path / "p.kv.safetensors").exists()
    with pytest.raises(ConfigError, match="this is an encoder adapter"):
        export_peft(pm, tmp_path / "peft")
    assert not (tmp_path / "peft").exists()


def test_generate_on_an_encoder_is_a_clear_error() -> None:
    pm = pt.attach(make_encoder("bert"), pt.PrefixConfig(method="kv", num_virtual_tokens=2, init="random", seed=0))
    with pytest.raises(UnsupportedModelError, match="does not generate text"):
        pm.generate(torch.tensor([[5, 6, 7]]), adapter_names=["default"])
