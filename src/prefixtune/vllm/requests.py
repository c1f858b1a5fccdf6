"""Our engine messages <-> vLLM's: sampling parameters, prompts with placeholders, and output deltas.

One job: the translation, in plain functions the engine calls per request. The user never sees the
placeholders: token counts, prompt logprobs and context checks are in the user's tokens (m left out).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vllm import SamplingParams as VllmSamplingParams
from vllm.sampling_params import RequestOutputKind

from prefixtune.serve.engine.messages import GenerationOutput, SamplingParams, TokenLogprobs
from prefixtune.vllm.addressing import adapter_params, adapter_prompt
from prefixtune.vllm.compiler import VllmAdapter


def vllm_prompt(prompt_token_ids: Iterable[int], adapter: VllmAdapter | None) -> dict[str, Any]:
    """The `TokensPrompt`: the bare prompt, or the adapter's placeholders + prompt with its cache salt."""
    if adapter is None:
        return {"prompt_token_ids": list(prompt_token_ids)}
    return adapter_prompt(list(prompt_token_ids), adapter.adapter_id, adapter.num_virtual_tokens)


def vllm_sampling(sampling: SamplingParams, adapter: VllmAdapter | None) -> VllmSamplingParams:
    """vLLM's sampling parameters for one sequence, streamed as deltas.

    Logprobs are vLLM's default `raw_logprobs`: the model's distribution before temperature, top-k and top-p,
    as the built-in engine reports them.
    """
    extra = {"kv_transfer_params": adapter_params(adapter.adapter_id)} if adapter is not None else None
    return VllmSamplingParams(
        n=1,
        max_tokens=sampling.max_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        stop=list(sampling.stop) or None,
        seed=sampling.seed,
        ignore_eos=sampling.ignore_eos,
        logprobs=sampling.logprobs,
        prompt_logprobs=sampling.prompt_logprobs,
        skip_special_tokens=True,
        output_kind=RequestOutputKind.DELTA,
        extra_args=extra,
    )


def token_logprobs(token_id: int, position: Mapping[int, Any] | None, k: int) -> TokenLogprobs | None:
    """One position's logprobs: the token's, and the k most likely (vLLM's rank 1..k), most likely first."""
    if position is None:
        return None
    chosen = position.get(token_id)
    ranked = sorted(((lp.rank, tid, lp.logprob) for tid, lp in position.items() if lp.rank is not None))
    top = tuple((tid, float(logprob)) for rank, tid, logprob in ranked if rank <= k)
    return TokenLogprobs(token_id, float(chosen.logprob) if chosen is not None else float("-inf"), top)


class OutputTranslator:
    """Turns one request's vLLM delta outputs into our `GenerationOutput`s (counts in the user's tokens)."""

    def __init__(self, request_id: str, num_prompt_tokens: int, sampling: SamplingParams) -> None:
        self.request_id, self.num_prompt_tokens, self.sampling = request_id, num_prompt_tokens, sampling
        self.num_generated = 0
        self.is_first = True

    def translate(self, output: Any) -> GenerationOutput:
        """One `RequestOutput` (delta) -> one `GenerationOutput`."""
        completion = output.outputs[0]
        token_ids = tuple(int(t) for t in completion.token_ids)
        self.num_generated += len(token_ids)
        logprobs = None
        if self.sampling.logprobs is not None:
            positions = list(completion.logprobs or [])
            logprobs = tuple(
                token_logprobs(t, p, self.sampling.logprobs) for t, p in zip(token_ids, positions, strict=True)
            )
        prompt_logprobs = None
        if self.sampling.prompt_logprobs is not None and self.is_first:
            prompt_logprobs = self._prompt_logprobs(output)
        self.is_first = False
        finish = completion.finish_reason if output.finished else None
        return GenerationOutput(
            request_id=self.request_id,
            text=completion.text,
            token_ids=token_ids,
            finish_reason=_finish_reason(finish),
            num_prompt_tokens=self.num_prompt_tokens,
            num_generated_tokens=self.num_generated,
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
        )

    def _prompt_logprobs(self, output: Any) -> tuple[TokenLogprobs | None, ...]:
        ids = list(output.prompt_token_ids or [])
        positions = list(output.prompt_logprobs or [None] * len(ids))
        k = self.sampling.prompt_logprobs or 0
        return tuple(token_logprobs(t, p, k) for t, p in zip(ids, positions, strict=True))


def _finish_reason(reason: str | None) -> Any:
    if reason is None:
        return None
    return reason if reason in ("stop", "length") else "abort"
