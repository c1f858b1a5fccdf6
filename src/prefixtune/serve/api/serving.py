"""Running one submitted request for HTTP: collect it whole, or stream it as server-sent events.

Shared by the completion and chat endpoints, which only shape the JSON. Both paths free the request's slot
when the client goes away (disconnect), when the server's timeout passes, or on any error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import StreamingResponse

from prefixtune.serve.api.errors import ClientDisconnected, EngineFailedError, RequestTimeoutError, error_body
from prefixtune.serve.engine.messages import GenerationOutput
from prefixtune.serve.engine.protocol import OutputStream

logger = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.25


@dataclass(slots=True)
class Collected:
    """A whole generation."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


async def collect(stream: OutputStream, request: Request, timeout_s: float) -> Collected:
    """Wait for the whole output; cancel the request on disconnect or timeout.

    Raises:
        RequestTimeoutError: past `timeout_s`. EngineFailedError: the engine aborted it.
        ClientDisconnected: the client left.
    """

    async def consume() -> Collected:
        parts, last = [], None
        async for out in stream:
            parts.append(out.text)
            last = out
        assert last is not None and last.finish_reason is not None
        return Collected("".join(parts), last.finish_reason, last.num_prompt_tokens, last.num_generated_tokens)

    task = asyncio.ensure_future(consume())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=min(DISCONNECT_POLL_S, max(deadline - loop.time(), 0)))
            if done:
                result = task.result()
                if result.finish_reason == "abort":
                    raise EngineFailedError("the engine stopped this request (shutdown or failure); retry")
                return result
            if loop.time() >= deadline:
                raise RequestTimeoutError(f"the request took longer than the server's timeout of {timeout_s:g} s")
            if await request.is_disconnected():
                raise ClientDisconnected
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await stream.cancel()


ChunkMaker = Callable[[GenerationOutput], list[dict]]


def sse_response(
    stream: OutputStream,
    make_chunks: ChunkMaker,
    *,
    first_chunks: list[dict] | None = None,
    usage_chunk: Callable[[GenerationOutput], dict] | None = None,
    timeout_s: float,
    keepalive_s: float,
) -> StreamingResponse:
    """An SSE response: `data: {chunk}` events, keep-alive comments when idle, then `data: [DONE]`."""
    return StreamingResponse(
        _events(stream, make_chunks, first_chunks or [], usage_chunk, timeout_s, keepalive_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    stream: OutputStream,
    make_chunks: ChunkMaker,
    first_chunks: list[dict],
    usage_chunk: Callable[[GenerationOutput], dict] | None,
    timeout_s: float,
    keepalive_s: float,
) -> AsyncIterator[str]:
    queue: asyncio.Queue[GenerationOutput | BaseException] = asyncio.Queue()
    pump = asyncio.ensure_future(_pump(stream, queue))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        for chunk in first_chunks:
            yield _data(chunk)
        while True:
            wait = min(keepalive_s, deadline - loop.time())
            if wait <= 0:
                yield _data(error_body(RequestTimeoutError(f"timed out after {timeout_s:g} s"))[1])
                break
            try:
                item = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if isinstance(item, BaseException):
                yield _data(error_body(item)[1])
                break
            if item.finish_reason == "abort":
                yield _data(error_body(EngineFailedError("the engine stopped this request; retry"))[1])
                break
            for chunk in make_chunks(item):
                yield _data(chunk)
            if item.finish_reason is not None:
                if usage_chunk is not None:
                    yield _data(usage_chunk(item))
                break
        yield "data: [DONE]\n\n"
    finally:  # also on client disconnect: Starlette cancels this generator
        pump.cancel()
        await stream.cancel()


async def _pump(stream: OutputStream, queue: asyncio.Queue) -> None:
    try:
        async for out in stream:
            queue.put_nowait(out)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # delivered as an error event
        logger.exception("stream failed")
        queue.put_nowait(exc)


def _data(chunk: dict) -> str:
    return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
