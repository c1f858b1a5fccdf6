"""Running the engine sequences of one HTTP request: collect them whole, or stream them as server-sent events.

A request may hold several sequences (n choices per prompt, several prompts): `submit_all` queues all of them
or none, and `ChoiceStreams` reads them as one, in arrival order, each output tagged with its choice index.
Shared by the completion and chat endpoints, which only shape the JSON. Every sequence of a request is
cancelled (its slot freed) when the client goes away, when the server's timeout passes, or on any error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse

from prefixtune.serve.api.errors import ClientDisconnected, EngineFailedError, RequestTimeoutError, error_body
from prefixtune.serve.engine.messages import GenerationOutput, GenerationRequest
from prefixtune.serve.engine.protocol import Engine, OutputStream

logger = logging.getLogger(__name__)

T = TypeVar("T")

DISCONNECT_POLL_S = 0.25


class ChoiceStreams:
    """The engine streams of one HTTP request (one per choice), read together.

    `get` returns (choice index, output) in arrival order until `is_finished` (every choice has its last
    output); `cancel` aborts every choice still running (idempotent).
    """

    def __init__(self, streams: Sequence[OutputStream]) -> None:
        self.streams = list(streams)
        self._queue: asyncio.Queue[tuple[int, GenerationOutput] | BaseException] = asyncio.Queue()
        self._pumps: list[asyncio.Future] = []
        self._running = len(self.streams)

    def __len__(self) -> int:
        return len(self.streams)

    @property
    def is_finished(self) -> bool:
        return self._running == 0

    async def get(self) -> tuple[int, GenerationOutput]:
        """The next output of any choice. Raises what reading a stream raised."""
        if not self._pumps:
            self._pumps = [asyncio.ensure_future(self._pump(i, s)) for i, s in enumerate(self.streams)]
        item = await self._queue.get()  # cancelling here loses nothing (wait_for with a timeout does)
        if isinstance(item, BaseException):
            raise item
        if item[1].finish_reason is not None:
            self._running -= 1
        return item

    async def cancel(self) -> None:
        for pump in self._pumps:
            pump.cancel()
        for stream in self.streams:
            await stream.cancel()

    async def _pump(self, index: int, stream: OutputStream) -> None:
        try:
            async for out in stream:
                self._queue.put_nowait((index, out))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # delivered to the reader
            logger.exception("stream failed")
            self._queue.put_nowait(exc)


async def submit_all(engine: Engine, requests: Sequence[GenerationRequest]) -> ChoiceStreams:
    """Submit every sequence of one HTTP request, or none: on the first refusal (queue full, too long, ...)
    the ones already queued are cancelled and the error propagates. Each sequence counts against the limits."""
    streams: list[OutputStream] = []
    try:
        for request in requests:
            streams.append(await engine.submit(request))
    except BaseException:
        for stream in streams:
            await stream.cancel()
        raise
    return ChoiceStreams(streams)


async def collect(streams: ChoiceStreams, request: Request, timeout_s: float) -> list[list[GenerationOutput]]:
    """Wait for every choice's whole output (per choice, its outputs in order); cancel all on disconnect,
    timeout or error.

    Raises:
        RequestTimeoutError: past `timeout_s`. EngineFailedError: the engine aborted a choice.
        ClientDisconnected: the client left.
    """

    async def consume() -> list[list[GenerationOutput]]:
        outputs: list[list[GenerationOutput]] = [[] for _ in range(len(streams))]
        while not streams.is_finished:
            index, out = await streams.get()
            if out.finish_reason == "abort":
                raise EngineFailedError("the engine stopped this request (shutdown or failure); retry")
            outputs[index].append(out)
        return outputs

    try:
        return await run_for_client(consume(), request, timeout_s)
    finally:
        await streams.cancel()


async def run_for_client(work: Awaitable[T], request: Request, timeout_s: float) -> T:
    """Await `work` while the client is there and the server's timeout has not passed; cancel it otherwise.

    Raises:
        RequestTimeoutError: past `timeout_s`. ClientDisconnected: the client left.
    """
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=min(DISCONNECT_POLL_S, max(deadline - loop.time(), 0)))
            if done:
                return task.result()
            if loop.time() >= deadline:
                raise RequestTimeoutError(f"the request took longer than the server's timeout of {timeout_s:g} s")
            if await request.is_disconnected():
                raise ClientDisconnected
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


ChunkMaker = Callable[[int, GenerationOutput], list[dict]]
"""(choice index, output) -> the chunks that carry it (possibly none)."""
LastChunks = Callable[[list[GenerationOutput]], list[dict]]
"""The last output of every choice, in choice order -> chunks after them (the usage chunk)."""


def sse_response(
    streams: ChoiceStreams,
    make_chunks: ChunkMaker,
    *,
    first_chunks: list[dict] | None = None,
    last_chunks: LastChunks | None = None,
    timeout_s: float,
    keepalive_s: float,
) -> StreamingResponse:
    """An SSE response: `data: {chunk}` events (choices interleaved as their outputs arrive), keep-alive
    comments when idle, then `data: [DONE]`."""
    return StreamingResponse(
        _events(streams, make_chunks, first_chunks or [], last_chunks, timeout_s, keepalive_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    streams: ChoiceStreams,
    make_chunks: ChunkMaker,
    first_chunks: list[dict],
    last_chunks: LastChunks | None,
    timeout_s: float,
    keepalive_s: float,
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    finals: dict[int, GenerationOutput] = {}
    try:
        for chunk in first_chunks:
            yield _data(chunk)
        while not streams.is_finished:
            wait = min(keepalive_s, deadline - loop.time())
            if wait <= 0:
                yield _data(error_body(RequestTimeoutError(f"timed out after {timeout_s:g} s"))[1])
                break
            try:
                index, out = await asyncio.wait_for(streams.get(), wait)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            except Exception as exc:
                yield _data(error_body(exc)[1])
                break
            if out.finish_reason == "abort":
                yield _data(error_body(EngineFailedError("the engine stopped this request; retry"))[1])
                break
            for chunk in make_chunks(index, out):
                yield _data(chunk)
            if out.finish_reason is not None:
                finals[index] = out
        else:
            for chunk in last_chunks([finals[i] for i in range(len(streams))]) if last_chunks else ():
                yield _data(chunk)
        yield "data: [DONE]\n\n"
    finally:  # also on client disconnect: Starlette cancels this generator
        await streams.cancel()


def _data(chunk: dict) -> str:
    return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
