"""`Sequence`: the engine's mutable state of one running request (pure Python, no torch).

Token accounting: `token_ids` = prompt + generated; `num_computed` tokens have keys/values in the request's
KV slot. While prefilling, `num_computed < num_prompt_tokens`; while decoding, exactly one token (the last
sampled one) is not yet computed.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from prefixtune.serve.engine.messages import FinishReason, SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


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
    state: dict[str, Any] = field(default_factory=dict)  # runner-owned per-request state (generator)

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
