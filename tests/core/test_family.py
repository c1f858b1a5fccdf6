"""Model-family capabilities in core/hf, per family: the reference path's decoder parts (learned or rotary
positions, refused otherwise) and which weights a model ties (what a weight copy may lack)."""

from __future__ import annotations

import pytest
import torch
import transformers

from prefixtune.core import decoder_parts, tied_weight_names
from prefixtune.errors import PrefixtuneError, UnsupportedModelError
from prefixtune.models import copy_weights
from tests.conftest import VOCAB, make_model
from tests.core.test_head import SMALL, make_family


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen3", "cohere"])
def test_decoder_parts_per_family(kind: str) -> None:
    model = make_family(kind) if kind == "cohere" else make_model(kind)
    parts = decoder_parts(model)
    assert len(parts.layers) == model.config.num_hidden_layers
    h, pos = torch.zeros(1, 3, 32), torch.arange(3)[None]
    rotary = parts.rotary(h, pos)
    if kind == "gpt2":  # learned positions are added to the embeddings; no rotary
        assert rotary is None and not torch.equal(parts.embed_positions(h, pos), h)
    else:  # rotary: (cos, sin) for every layer; the embeddings go in unchanged
        assert isinstance(rotary, tuple) and torch.equal(parts.embed_positions(h, pos), h)


def test_decoder_parts_refuse_positions_they_cannot_run() -> None:
    model = transformers.BloomForCausalLM(
        transformers.BloomConfig(vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=4)
    )
    with pytest.raises(UnsupportedModelError, match="not BloomForCausalLM"):
        decoder_parts(model)  # ALiBi: neither learned nor rotary positions


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("tied", [True, False])
def test_tied_weight_names_follow_the_config(kind: str, tied: bool) -> None:
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, tie_word_embeddings=tied)
        model = transformers.GPT2LMHeadModel(config)
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL, tie_word_embeddings=tied))
    assert tied_weight_names(model) == ({"lm_head.weight"} if tied else set())


@pytest.mark.parametrize("tied", [True, False])
def test_a_weight_copy_may_lack_only_tied_weights(tied: bool) -> None:
    # Before: a missing lm_head.weight was always accepted, leaving an untied head random.
    torch.manual_seed(0)
    source = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL, tie_word_embeddings=tied))
    state = {k: v for k, v in source.state_dict().items() if k != "lm_head.weight"}
    torch.manual_seed(1)
    target = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL, tie_word_embeddings=tied))
    if not tied:
        with pytest.raises(PrefixtuneError, match="missing"):
            copy_weights(target, state, "test")
        return
    copy_weights(target, state, "test")
    assert torch.equal(target.lm_head.weight, source.model.embed_tokens.weight)
