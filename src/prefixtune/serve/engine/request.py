"""`Sequence`: the engine's mutable state of one running request, and `RequestState`, the engine's own
per-request objects (pure Python, no torch at run time).

Token accounting: `token_ids` = prompt + generated; `num_computed` tokens have keys/values in the request's
KV slot. While prefilling, `num_computed < num_prompt_tokens`; while decoding, exactly one token (the last
sampled one) is not yet computed.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefixtune.serve.engine.messages import FinishReason, SamplingParams, TokenLogprobs

if TYPE_CHECKING:  # the runner's generator is a torch object; the scheduler side never imports torch
    import torch

    from prefixtune.serve.engine.detokenizer import IncrementalDetokenizer


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(slots=True)
class RequestState:
    """What the engine keeps per request beyond token accounting (issue 11, item 4: was a dict of string keys).

    Attributes:
        detokenizer: text so far, stop strings (set by `EngineCore.add`).
        generator: the request's random generator, made on its first sampled token (`ModelRunner`).
        last_token_time: when its last token was emitted (monotonic s; None before the first: time to first
            token vs. inter-token latency).
        prompt_logprobs: prompt logprobs gathered over the prefill chunks until the first output carries them
            (None: none pending).
    """

    detokenizer: IncrementalDetokenizer | None = None
    generator: torch.Generator | None = None
    last_token_time: float | None = None
    prompt_logprobs: list[TokenLogprobs] | None = None


@dataclass(eq=False, slots=True)
class Sequence:
    """One request inside the engine.

    Attributes:
        request_id: unique id.
        prompt_token_ids: the prompt.
        sampling: sampling parameters.
        adapter_name: adapter name or None (base model).
        prefix: the compiled prefix the runner injects (a `PrefixKV`; opaque to the scheduler), or None.
        num_virtual_tokens: m of that prefix (0 without one); positions start at m.
        state: the engine core's and runner's per-request objects.
    """

    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingParams
    adapter_name: str | None = None
    prefix: Any = None
    num_virtual_tokens: int = 0
    output_token_ids: list[int] = field(default_factory=list)
    num_computed: int = 0
    slot: int | None = None
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: FinishReason | None = None
    arrival_time: float = field(default_factory=time.monotonic)
    state: RequestState = field(default_factory=RequestState)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def is_prefilling(self) -> bool:
        return self.num_computed < self.num_prompt_tokens

    def token_at(self, index: int) -> int:
        n = len(self.prompt_token_ids)
        return self.prompt_token_ids[index] if index < n else self.output_token_ids[index - n]

    def pending_token_ids(self, count: int) -> list[int]:
        """The next `count` tokens to compute."""
        return [self.token_at(i) for i in range(self.num_computed, self.num_computed + count)]
