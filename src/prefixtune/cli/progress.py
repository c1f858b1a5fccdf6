"""The command line's progress bar: renders the trainer's `ProgressEvent`s on stderr (tqdm).

The library reports progress through a callback (`train.progress`) and never draws; drawing is the CLI's job
(STYLE.md, Logging).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefixtune.train.progress import ProgressCallback, ProgressEvent


@contextmanager
def progress_bar(enabled: bool, desc: str = "train") -> Iterator[ProgressCallback | None]:
    """A callback drawing a bar of optimizer steps for the block (None when not `enabled`).

    The bar is created on the first event, so a resumed run starts at its restored step.
    """
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    bar: Any = None

    def show(event: ProgressEvent) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(
                total=event.max_steps,
                initial=event.step - 1,
                desc=desc,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
            )
        lr, speed = f"{event.learning_rate:.2e}", f"{event.tokens_per_second:.0f}"
        bar.set_postfix(loss=f"{event.loss:.4f}", lr=lr, tok_s=speed, refresh=False)
        bar.update(event.step - bar.n)

    try:
        yield show
    finally:
        if bar is not None:
            bar.close()
