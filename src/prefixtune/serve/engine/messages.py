"""Typed messages between the HTTP layer and the engine (frozen, slotted dataclasses; no torch).

The HTTP edge converts pydantic models into these; the engine answers with `GenerationOutput`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request sampling; a request's output does not depend on what else is in the batch.

    Attributes:
        max_tokens: new tokens to generate at most.
        temperature: 0 means greedy (argmax); otherwise logits are divided by it.
        top_p: nucleus sampling mass (1.0: off).
        top_k: keep the k most likely tokens (0: off).
        stop: strings that end generation; the stop string is not returned.
        seed: seed of the request's own random generator (None: drawn at random).
        ignore_eos: keep generating past the end-of-sequence token.
        logprobs: None, or k: report each generated token's log-probability and the k most likely tokens at
            its position (log_softmax of the raw logits in fp32, before temperature, top-k and top-p).
        prompt_logprobs: None, or k: the same for every prompt token after the first (needs the logits of
            every prompt position, computed for this request only).
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    logprobs: int | None = None
    prompt_logprobs: int | None = None

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One completion to run.

    Attributes:
        request_id: unique id (also used to cancel).
        prompt_token_ids: the tokenized prompt.
        sampling: sampling parameters.
        adapter_name: the adapter whose prefix the request attends to; None for the bare base model.
    """

    request_id: str
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    adapter_name: str | None = None


@dataclass(frozen=True, slots=True)
class TokenLogprobs:
    """The log-probabilities at one position of a sequence.

    Attributes:
        token_id: the token at this position (sampled, or the prompt's).
        logprob: its log-probability under the model's next-token distribution.
        top: the k most likely tokens as (token id, log-probability), most likely first; `token_id` may be
            missing from it.
    """

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, slots=True)
class GenerationOutput:
    """An increment of one request's output (streamed; the last one has a `finish_reason`).

    Attributes:
        request_id: the request.
        text: new text since the previous output (stop strings removed).
        token_ids: new token ids since the previous output.
        finish_reason: None while running; "stop" (EOS or stop string), "length" or "abort" at the end.
        num_prompt_tokens: prompt length in tokens.
        num_generated_tokens: tokens generated so far.
        logprobs: with `SamplingParams.logprobs`, one entry per `token_ids` entry (also for tokens whose text
            is held back or cut by a stop string); else None.
        prompt_logprobs: with `SamplingParams.prompt_logprobs`, in the request's first output only: one entry
            per prompt token, the first None (nothing predicts it); else None.
    """

    request_id: str
    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason | None
    num_prompt_tokens: int
    num_generated_tokens: int
    logprobs: tuple[TokenLogprobs, ...] | None = None
    prompt_logprobs: tuple[TokenLogprobs | None, ...] | None = None


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One chat message, as the chat template consumes it."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    """What the registry knows of one adapter (no tensors).

    Attributes:
        name: the adapter name (the OpenAI `model` field).
        path: its directory.
        method: "prefix", "kv" or "prompt".
        num_virtual_tokens: m.
        created: unix time it was registered.
        key_sha256: sha256 (hex) of the keys that may use it (empty: any key that passes the server's own
            check). Raw keys are never kept (issue 10).
        is_cached: whether its compiled prefix is in the cache now.
    """

    name: str
    path: str
    method: str
    num_virtual_tokens: int
    created: int
    key_sha256: frozenset[str] = frozenset()
    is_cached: bool = False


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot for /health."""

    num_running: int
    num_waiting: int
    num_free_slots: int
    is_accepting: bool


@dataclass(frozen=True, slots=True)
class ClassifyRequest:
    """Texts to classify with one adapter's prefix and head (an encoder's `/v1/classify`).

    Attributes:
        request_id: unique id.
        inputs: the token ids of each input (special tokens included), classified each on its own.
        adapter_name: the adapter; None for the bare base model and its own head.
    """

    request_id: str
    inputs: tuple[tuple[int, ...], ...]
    adapter_name: str | None = None


@dataclass(frozen=True, slots=True)
class Classification:
    """The classification of one input.

    Attributes:
        probs: softmax of the head's logits (fp32), one per class, in label-id order.
        label: the most likely class's name (None when the labels are unknown).
        num_prompt_tokens: the input's length in tokens.
    """

    probs: tuple[float, ...]
    label: str | None
    num_prompt_tokens: int
