"""Log-probabilities of chosen tokens and of the k most likely alternatives, from rows of logits (torch).

What is reported is the model's raw next-token distribution: an fp32 `log_softmax` of the logits, before
temperature, top-k or top-p (vLLM's default), so a token's logprob does not depend on how it was sampled.
Top-k is taken on the device; only the chosen and the k best values per row are copied to Python, never a
whole vocabulary row. Used by the runner for the rows whose request asked, and for no other row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prefixtune.serve.engine.messages import TokenLogprobs


def token_logprobs(logits: torch.Tensor, chosen: Sequence[int], ks: Sequence[int]) -> list[TokenLogprobs]:
    """The logprob of `chosen[i]` under row i, and row i's `ks[i]` most likely tokens.

    Args:
        logits: (N, V) raw logits, any dtype.
        chosen: N token ids (the sampled or the given tokens).
        ks: N numbers of alternatives, each in 0..V.

    Returns:
        N `TokenLogprobs`, each `top` sorted by descending logprob.
    """
    if not chosen:
        return []
    logprobs = logits.float().log_softmax(-1)  # (N, V)
    ids = torch.tensor(list(chosen), device=logits.device)  # (N,)
    picked = logprobs.gather(1, ids[:, None])[:, 0].tolist()  # N floats
    k = max(ks)
    top_values: list[list[float]] = [[] for _ in chosen]
    top_ids: list[list[int]] = [[] for _ in chosen]
    if k > 0:
        top = logprobs.topk(k, dim=-1)  # (N, k), sorted descending
        top_values, top_ids = top.values.tolist(), top.indices.tolist()
    return [
        TokenLogprobs(int(token), value, tuple(zip(top_ids[i][: ks[i]], top_values[i][: ks[i]], strict=True)))
        for i, (token, value) in enumerate(zip(chosen, picked, strict=True))
    ]
