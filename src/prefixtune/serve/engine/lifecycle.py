"""How an engine stops: refuse new work, let its worker thread finish what it holds, then stop the thread.

One job, shared by the generative engine (`EngineCore`) and the encoder engine (`ClassifyBatcher`), whose
worker threads both report `has_work` and `stop(timeout)`.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Worker(Protocol):
    """An engine's model-owning thread."""

    @property
    def has_work(self) -> bool: ...

    def stop(self, timeout: float) -> None: ...


DRAIN_POLL_S = 0.02
STOP_TIMEOUT_S = 10.0


async def drain_then_stop(worker: Worker, drain_timeout: float) -> None:
    """Wait until `worker` has no work (at most `drain_timeout` s), then stop its thread off the event loop.

    The caller stops accepting first, so nothing new arrives while it drains.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + drain_timeout
    while worker.has_work and loop.time() < deadline:
        await asyncio.sleep(DRAIN_POLL_S)
    await asyncio.to_thread(worker.stop, STOP_TIMEOUT_S)
