"""Tiny random-weight models built from configs (nothing is downloaded)."""

from __future__ import annotations

import pytest
import torch
import transformers

VOCAB = 128


def make_model(kind: str, attn: str = "sdpa", seed: int = 0) -> transformers.PreTrainedModel:
    """A tiny causal LM: 'gpt2', 'llama' (grouped-query attention) or 'qwen3' (explicit head_dim, q/k norm)."""
    torch.manual_seed(seed)
    if kind == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=256, bos_token_id=1, eos_token_id=2
        )
        model = transformers.GPT2LMHeadModel(config)
    elif kind == "llama":
        config = transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            bos_token_id=1,
            eos_token_id=2,
        )
        model = transformers.LlamaForCausalLM(config)
    elif kind == "qwen3":
        config = transformers.Qwen3Config(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=256,
            bos_token_id=1,
            eos_token_id=2,
        )
        model = transformers.Qwen3ForCausalLM(config)
    else:
        raise ValueError(kind)
    model.set_attn_implementation(attn)
    return model.eval()


@pytest.fixture(params=["gpt2", "llama"])
def model_kind(request) -> str:
    return request.param


def batch(B: int = 3, n: int = 7, padding: str = "right", seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids and a mask with rows of different lengths, padded left or right."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (B, n), generator=g)
    mask = torch.ones(B, n, dtype=torch.long)
    for r in range(1, B):
        pad = min(r * 2, n - 1)
        if padding == "right":
            mask[r, n - pad :] = 0
        else:
            mask[r, :pad] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


def pytest_collection_modifyitems(config, items) -> None:
    """Skip tests marked `gpu` on machines without CUDA (CI has none; see README)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
