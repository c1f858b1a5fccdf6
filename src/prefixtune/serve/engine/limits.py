"""`EngineLimits`: the limits every engine is started with (batching, context), whichever engine it is.

One job: these fields and their defaults, once. The built-in engine sizes its KV slots and scheduler from
them; the vLLM engine passes them to vLLM; the HTTP layer reads `max_waiting` from here. Pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefixtune.config_sections import flag_help, section
from prefixtune.serve.engine.scheduler import SchedulerConfig


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """Batching and context limits (the `prefixtune serve` flags of the same names).

    Attributes:
        scheduler: requests running at once, tokens per step, queue length.
        max_model_len: context limit, prompt + max_tokens + m; None: min(the model's, 2048). Each of the
            `max_num_seqs` slots of the built-in engine preallocates this many positions in every layer.
    """

    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig, metadata=section(SchedulerConfig))
    max_model_len: int | None = field(
        default=None,
        metadata=flag_help(
            "Context limit (prompt + max_tokens + prefix); default: min(the model's, 2048). Every KV slot "
            "preallocates this many positions."
        ),
    )

    def problems(self) -> list[str]:
        out = self.scheduler.problems()
        if self.max_model_len is not None and self.max_model_len < 2:
            out.append(f"max_model_len={self.max_model_len} must be >= 2")
        return out
