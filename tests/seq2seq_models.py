"""Tiny random-weight encoder-decoders (T5, BART) built from configs, and random per-site prefixes."""

from __future__ import annotations

import torch
import transformers

import prefixtune as pt

VOCAB = 128
FAMILIES = ("t5", "bart")


def make_seq2seq(kind: str, attn: str = "sdpa", seed: int = 0) -> transformers.PreTrainedModel:
    """A tiny encoder-decoder: 't5' (relative position bias, 2 + 2 layers) or 'bart' (learned
    positions, 2 encoder + 3 decoder layers). Dropout off, so training steps are deterministic."""
    torch.manual_seed(seed)
    if kind == "t5":
        config = transformers.T5Config(
            vocab_size=VOCAB,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,  # generate sizes its cache by num_layers
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
            dropout_rate=0.0,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=2,  # the ids of tests/train's character tokenizer: <pad> 0, <s> 1, </s> 2
        )
        model = transformers.T5ForConditionalGeneration(config)
    elif kind == "bart":
        config = transformers.BartConfig(
            vocab_size=VOCAB,
            d_model=32,
            encoder_layers=2,
            decoder_layers=3,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=64,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_eos_token_id=None,
            init_std=0.2,  # BART's default 0.02 leaves random layers close to the identity
        )
        model = transformers.BartForConditionalGeneration(config)
    else:
        raise ValueError(kind)
    model.set_attn_implementation(attn)
    return model.eval()


def randomize(pm: pt.PrefixModel, name: str | None = None, seed: int = 0, scale: float = 1.0) -> None:
    """Give adapter `name` random, independent values in every layer and site (not a vocabulary init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pm.get_adapter(name).parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def seq2seq_batch(B: int = 3, n: int = 7, n_dec: int = 5, padding: str = "right", seed: int = 1):
    """Encoder ids/mask (rows of different lengths, padded left or right) and right-padded decoder ids/mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (B, n), generator=g)
    dec = torch.randint(3, VOCAB, (B, n_dec), generator=g)
    mask = torch.ones(B, n, dtype=torch.long)
    dmask = torch.ones(B, n_dec, dtype=torch.long)
    for r in range(1, B):
        pad = min(2 * r, n - 1)
        if padding == "right":
            mask[r, n - pad :] = 0
        else:
            mask[r, :pad] = 0
        dmask[r, n_dec - min(r, n_dec - 1) :] = 0
    return ids, mask, dec, dmask


def save_tiny_seq2seq(kind: str, directory):
    """A tiny random encoder-decoder with tests/train's character tokenizer, saved as an HF directory."""
    from tests.train.conftest import make_tokenizer

    make_seq2seq(kind).save_pretrained(directory)
    make_tokenizer().save_pretrained(directory)
    return directory
