"""Initial values for adapters: random, from random vocabulary tokens, or from a text's activations.

"text" follows the recipe reported best for modern LLMs: run the frozen model on real text and start from
the states (or keys/values) it produces there, instead of from noise.
"""

from __future__ import annotations

import torch
from torch import nn

from prefixtune.config import PrefixConfig
from prefixtune.core import embedding_std
from prefixtune.errors import ConfigError


def generator(config: PrefixConfig) -> torch.Generator | None:
    """A seeded CPU generator when the config has a seed, else None (torch's global RNG); tensors are moved
    after sampling.

    Make one per initialization and draw everything from it: a fresh generator per draw would repeat the
    same noise in every layer, and in keys and values alike (issue 11, item 6).
    """
    if config.seed is None:
        return None
    return torch.Generator().manual_seed(config.seed)


def random_normal(shape: tuple[int, ...], std: float, rng: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """N(0, std^2) of `shape`, drawn from `rng` (see `generator`), on `like`'s device and dtype."""
    out = torch.randn(shape, generator=rng) * std
    return out.to(device=like.device, dtype=like.dtype)


def init_token_ids(
    config: PrefixConfig, model: nn.Module, tokenizer: object | None, rng: torch.Generator | None = None
) -> torch.Tensor:
    """(1, m) token ids whose activations initialize the adapter (init 'vocab' draws them from `rng`, or 'text')."""
    m = config.num_virtual_tokens
    device = model.get_input_embeddings().weight.device
    if config.init == "vocab":
        vocab = model.get_input_embeddings().weight.shape[0]
        # Skip the first ids, which are often special tokens.
        low = min(100, vocab // 2)
        ids = torch.randint(low, vocab, (m,), generator=rng)
        return ids[None].to(device)
    if tokenizer is None:
        raise ConfigError("init='text' needs a tokenizer: pass tokenizer=... to attach()/add_adapter()")
    ids = tokenizer(config.init_text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ConfigError(f"init_text={config.init_text!r} tokenizes to no tokens")
    repeated = (ids * (m // len(ids) + 1))[:m]  # tile short texts to m tokens
    return torch.tensor([repeated], device=device)


def embedding_scale(model: nn.Module) -> float:
    """The std used by random initializations: the token embedding matrix's."""
    return embedding_std(model)
