"""Training progress as values: the trainer reports a `ProgressEvent` after every optimizer step to a callback.

The library never draws (STYLE.md, Logging): the CLI passes a callback that renders a progress bar on stderr
(`cli.progress`); a notebook or an HTTP job runner can pass its own. Depends on nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One finished optimizer step.

    Attributes:
        step: optimizer steps done (counting steps restored by a resume).
        max_steps: the run's total.
        loss: mean loss per label token of this step.
        learning_rate: after the scheduler's step.
        tokens_per_second: real tokens of this step over its wall time.
    """

    step: int
    max_steps: int
    loss: float
    learning_rate: float
    tokens_per_second: float


ProgressCallback = Callable[[ProgressEvent], None]
