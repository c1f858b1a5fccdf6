"""`build_app`: the FastAPI application over an `Engine` (routes, error table, limits, lifespan).

The lifespan starts the engine and, on shutdown, drains it: uvicorn first stops accepting connections and
waits for in-flight responses (streams included), then the engine finishes whatever is left and stops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prefixtune.serve.api import routes_classify, routes_completions, routes_health, routes_models
from prefixtune.serve.api.deps import ApiSettings
from prefixtune.serve.api.errors import error_response, register_error_handlers
from prefixtune.serve.engine.protocol import Engine
from prefixtune.serve.metrics import ServeMetrics

logger = logging.getLogger(__name__)

StartupHook = Callable[[], Awaitable[None]]
_MODEL_PATHS = frozenset({"/v1/completions", "/v1/chat/completions", "/v1/classify"})


class BodyLimitMiddleware:
    """413 `request_too_large` for request bodies over `max_bytes`, by Content-Length or by counting a chunked
    body. The body is read here, before the app (FastAPI turns any error while it reads a body into a 400), then
    replayed; later `receive` calls (disconnect checks) go to the server."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        chunks, seen, message = [], 0, {"type": "http.request", "more_body": True}
        while message["type"] == "http.request" and message.get("more_body", False):
            message = await receive()
            chunk = message.get("body", b"") if message["type"] == "http.request" else b""
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            chunks.append(chunk)
        if message["type"] != "http.request":  # the client left while sending
            return
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replaying_receive() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replaying_receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body is larger than the server's limit of {self.max_bytes} bytes"
        await error_response(413, message, "invalid_request_error", "request_too_large")(scope, receive, send)


class RequestMetricsMiddleware:
    """Counts generation and classification requests by endpoint and status, and observes their latency (pure ASGI, so
    streaming responses and disconnects pass through untouched)."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in _MODEL_PATHS:  # bounded label values
            await self.app(scope, receive, send)
            return
        start, status = time.monotonic(), "499"  # stays 499 only if the client left before any response

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        except Exception:
            if status == "499":  # no response started: the 500 is sent by the outer error middleware
                status = "500"
            raise
        finally:
            self.metrics.requests.labels(path, status).inc()
            self.metrics.request_latency.observe(time.monotonic() - start)


def build_app(
    engine: Engine,
    settings: ApiSettings,
    metrics: ServeMetrics,
    *,
    on_startup: StartupHook | None = None,
    drain_timeout_s: float = 30.0,
) -> FastAPI:
    """The server application.

    Args:
        engine: the engine (started and drained by the lifespan).
        settings: HTTP-layer settings.
        metrics: the server's metrics (also updated by the engine and registry).
        on_startup: awaited after the engine starts (e.g. loading the adapter root).
        drain_timeout_s: how long shutdown waits for running requests.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        if on_startup is not None:
            await on_startup()
        logger.info("serving %s", engine.model_name)
        try:
            yield
        finally:
            await engine.shutdown(drain_timeout_s)
            logger.info("server stopped")

    app = FastAPI(title="prefixtune serve", lifespan=lifespan)
    app.state.engine, app.state.settings, app.state.metrics = engine, settings, metrics
    register_error_handlers(app)
    for module in (routes_completions, routes_classify, routes_models, routes_health):
        app.include_router(module.router)

    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    return app
