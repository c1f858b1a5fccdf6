"""`EngineCalls`: functions waiting to run on the engine thread between steps (adapter compiles).

One job: the queue, its wake-up and the awaitable side. Compiling an adapter runs the frozen model, so it must
not race a forward pass: the registry is built with `run_compile=calls.run` and the engine's loop runs
`run_pending()` between steps. Existing before both, it is handed to each at construction (issue 11, item 4;
before, the engine replaced the registry's compile function after the fact). No torch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Callable
from typing import Any


class EngineCalls:
    """The engine thread's inbox of calls; `wake` is set whenever there is something for the loop to do."""

    def __init__(self) -> None:
        self.wake = threading.Event()
        self._queue: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Queue `fn` for the engine thread; returns its future (result or exception)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.append((fn, future))
        self.wake.set()
        return future

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the engine thread and await its result (an `AdapterRegistry` `run_compile`)."""
        return await asyncio.wrap_future(self.submit(fn))

    def run_pending(self) -> None:
        """On the engine thread: run every queued call, delivering results and exceptions to the callers."""
        while self._queue:
            fn, future = self._queue.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # delivered to the caller, who raises it
                future.set_exception(exc)
