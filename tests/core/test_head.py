"""`output_logits` (core/hf/head.py): logits from final hidden states through each family's own head, equal to
the model's forward also where a family scales (Cohere, Granite) or soft-caps (Gemma 2) its logits."""

from __future__ import annotations

import pytest
import torch
import transformers

from prefixtune.core import output_logits
from tests.conftest import VOCAB, make_model

SMALL = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def make_family(kind: str) -> transformers.PreTrainedModel:
    """A tiny model whose head does more than multiply by the output embeddings (or, for gpt2/llama, not)."""
    torch.manual_seed(0)
    if kind in ("gpt2", "llama"):
        return make_model(kind)
    if kind == "cohere":  # logits * logit_scale
        model = transformers.CohereForCausalLM(transformers.CohereConfig(**SMALL, logit_scale=0.25))
    elif kind == "gemma2":  # cap * tanh(logits / cap)
        config = transformers.Gemma2Config(**SMALL, head_dim=8, final_logit_softcapping=0.5)
        model = transformers.Gemma2ForCausalLM(config)
    elif kind == "granite":  # logits / logits_scaling
        model = transformers.GraniteForCausalLM(transformers.GraniteConfig(**SMALL, logits_scaling=4.0))
    else:
        raise ValueError(kind)
    model.set_attn_implementation("eager")
    return model.eval()


@pytest.mark.parametrize("kind", ["gpt2", "llama", "cohere", "gemma2", "granite"])
def test_output_logits_equal_the_forward(kind: str) -> None:
    model = make_family(kind)
    ids = torch.randint(3, VOCAB, (2, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        logits = output_logits(model, out.hidden_states[-1])
        plain = model.get_output_embeddings()(out.hidden_states[-1])
    torch.testing.assert_close(logits, out.logits, rtol=1e-5, atol=1e-5)
    if kind not in ("gpt2", "llama"):  # the family's head really differs: the old rule was wrong here
        assert not torch.allclose(plain, out.logits, atol=1e-3)
    assert "forward" not in model.base_model.__dict__  # the stand-in is gone
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, out.logits)
