"""Per-request sampling from one row of logits.

Each request draws from its own `torch.Generator` (seeded by the request), one draw per token, so what a
request samples does not depend on which other requests share its batch.
"""

from __future__ import annotations

import random

import torch

from prefixtune.serve.engine.messages import SamplingParams


def make_generator(params: SamplingParams) -> torch.Generator | None:
    """The request's generator (None for greedy requests, which draw nothing)."""
    if params.is_greedy:
        return None
    seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**63)
    return torch.Generator(device="cpu").manual_seed(seed)


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """Pick the next token from logits (V,) with temperature, top-k and top-p."""
    if params.is_greedy or generator is None:
        return int(torch.argmax(logits))
    logits = logits.float().cpu()
    # Shifted so the largest score is 0 (softmax does not change): a tiny temperature then drives the others to
    # -inf, i.e. towards greedy, instead of overflowing every score to inf and the probabilities to NaN.
    scores = (logits - logits.max()) / params.temperature  # (V,)
    if 0 < params.top_k < scores.shape[0]:
        kth = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        probs = sorted_scores.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the first token always stays)
        drop = (probs.cumsum(-1) - probs) >= params.top_p
        scores = scores.scatter(0, order, sorted_scores.masked_fill(drop, float("-inf")))
    probs = scores.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))
