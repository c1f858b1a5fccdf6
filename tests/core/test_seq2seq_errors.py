"""Encoder-decoders (issue 12): what is refused, and how it is said."""

from __future__ import annotations

import pytest
import transformers

import prefixtune as pt
from tests.conftest import make_model
from tests.seq2seq_models import make_seq2seq


def test_an_encoder_decoder_whose_attention_bypasses_transformers_interface_is_refused() -> None:
    config = transformers.LEDConfig(
        vocab_size=64,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        attention_window=4,
        max_encoder_position_embeddings=32,
        max_decoder_position_embeddings=32,
    )
    model = transformers.LEDForConditionalGeneration(config).eval()
    with pytest.raises(pt.UnsupportedModelError, match="does not go through transformers' AttentionInterface"):
        pt.attach(model, pt.PrefixConfig(method="kv", num_virtual_tokens=2))
    assert not model.config._attn_implementation.startswith("prefixtune")  # nothing was changed


def test_sites_on_a_decoder_only_model_are_refused() -> None:
    with pytest.raises(pt.ConfigError, match="sites=\\['cross'\\] applies to encoder-decoder models"):
        pt.attach(make_model("gpt2"), pt.PrefixConfig(method="kv", num_virtual_tokens=2, sites=("cross",)))


def test_bad_sites_are_named() -> None:
    with pytest.raises(pt.ConfigError, match="site 'self' is unknown; choose among encoder, decoder, cross"):
        pt.PrefixConfig(sites=("self",))
    with pytest.raises(pt.ConfigError, match="name a site twice"):
        pt.PrefixConfig(sites=("cross", "cross"))
    assert pt.PrefixConfig(sites="encoder,cross").sites == ("encoder", "cross")  # as a flag gives it


def test_prompt_tuning_is_refused_with_the_reason() -> None:
    with pytest.raises(pt.ConfigError, match=r"method .prompt. is not built for encoder-decoders.*bidirectional"):
        pt.attach(make_seq2seq("t5"), pt.PrefixConfig(method="prompt", num_virtual_tokens=2))


def test_position_convention_is_recorded_as_unshifted() -> None:
    pm = pt.attach(make_seq2seq("bart"), pt.PrefixConfig(method="kv", num_virtual_tokens=2))
    assert pm.adapter_config().position_convention == "unshifted"
    assert pm.compile().position_convention == "unshifted"


def test_peft_export_is_refused_with_what_to_do(tmp_path) -> None:
    from prefixtune.io.peft_export import export_peft

    pm = pt.attach(make_seq2seq("t5"), pt.PrefixConfig(method="kv", num_virtual_tokens=2))
    with pytest.raises(pt.ConfigError, match=r"cannot be expressed in PEFT.*export a KV pack"):
        export_peft(pm, tmp_path / "peft")
    assert not (tmp_path / "peft").exists()
