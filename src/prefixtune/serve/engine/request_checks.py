"""What every engine checks of a request before queueing it (the built-in engine and vLLM alike).

One job: token ids inside the vocabulary, logprob counts in range, and prompt + max_tokens inside the context
the request has, which is the model's less the adapter's m prefix positions. Raising here, before anything is
queued, lets HTTP answer 4xx before a stream starts. No torch.
"""

from __future__ import annotations

from prefixtune.serve.engine.messages import GenerationRequest
from prefixtune.serve.errors import ContextLengthError, InvalidRequestError


def check_request(request: GenerationRequest, *, num_virtual_tokens: int, vocab_size: int, max_len: int) -> None:
    """Raise InvalidRequestError or ContextLengthError for a request no engine can run.

    Args:
        request: the request.
        num_virtual_tokens: m of its adapter (0 for the bare model).
        vocab_size: the model's vocabulary (may exceed the tokenizer's).
        max_len: the engine's context in positions, prefix included.
    """
    n, max_tokens, m = len(request.prompt_token_ids), request.sampling.max_tokens, num_virtual_tokens
    if n == 0:
        raise InvalidRequestError("the prompt is empty; send at least one token")
    bad = [t for t in request.prompt_token_ids if not 0 <= t < vocab_size]
    if bad:
        raise InvalidRequestError(f"prompt token ids {bad[:5]} are outside the vocabulary (0..{vocab_size - 1})")
    for name in ("logprobs", "prompt_logprobs"):
        k = getattr(request.sampling, name)
        if k is not None and not 0 <= k <= vocab_size:
            raise InvalidRequestError(f"{name}={k} must be in 0..{vocab_size} (the vocabulary size)")
    if n + max_tokens + m > max_len:
        prefix = f", {m} of them taken by this adapter's prefix" if m else ""
        raise ContextLengthError(
            f"this model's context is {max_len} tokens{prefix}: the request has {max_len - m}, and needs "
            f"{n + max_tokens} ({n} prompt + {max_tokens} max_tokens). Shorten the prompt or lower max_tokens."
        )
