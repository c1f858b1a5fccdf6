"""One table from error classes to HTTP statuses and OpenAI error bodies, registered once on the app.

Routes raise typed errors (library ones, `serve.errors`, or the HTTP-only ones below); nothing here reads an
exception's text to decide anything. Bad input never becomes a 500: only unexpected exceptions do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from prefixtune.errors import (
    AdapterFormatError,
    AdapterNotFoundError,
    ConfigError,
    EngineBusyError,
    IncompatibleBaseModelError,
)
from prefixtune.serve.api.protocol import ErrorInfo, ErrorResponse
from prefixtune.serve.errors import (
    AccessRuleError,
    AdapterExistsError,
    AdapterIntegrityError,
    AdapterNameError,
    ContextLengthError,
    EncoderModelError,
    EngineShutdownError,
    EngineStepError,
    InvalidRequestError,
    NotAClassifierError,
    NotAnEncoderError,
    RegistryStateError,
)

logger = logging.getLogger(__name__)

RETRY_AFTER_S = "1"


class AuthenticationError(Exception):
    """Missing or invalid API key (401)."""


class PermissionDeniedError(Exception):
    """The key is valid but may not use this adapter or endpoint (403)."""


class RequestTimeoutError(Exception):
    """The request ran past the server's timeout (504)."""


class EngineFailedError(Exception):
    """The engine aborted the request (a failed step or shutdown) (503)."""


class ClientDisconnected(Exception):
    """The client went away before the response was ready (its slot is already freed; 499, never sent)."""


@dataclass(frozen=True, slots=True)
class ErrorKind:
    status: int
    type: str
    code: str | None = None
    retry_after: bool = False


# Most specific classes first: the first isinstance match wins.
ERROR_TABLE: tuple[tuple[type[BaseException], ErrorKind], ...] = (
    (ContextLengthError, ErrorKind(400, "invalid_request_error", "context_length_exceeded")),
    (AdapterNameError, ErrorKind(400, "invalid_request_error", "invalid_adapter_name")),
    (AccessRuleError, ErrorKind(400, "invalid_request_error", "access_rule_required")),
    (EncoderModelError, ErrorKind(400, "invalid_request_error", "encoder_model")),
    (NotAnEncoderError, ErrorKind(400, "invalid_request_error", "not_an_encoder")),
    (NotAClassifierError, ErrorKind(400, "invalid_request_error", "not_a_classifier")),
    (InvalidRequestError, ErrorKind(400, "invalid_request_error", "invalid_request")),
    (ConfigError, ErrorKind(400, "invalid_request_error", "invalid_config")),
    (IncompatibleBaseModelError, ErrorKind(400, "invalid_request_error", "incompatible_base_model")),
    (AdapterFormatError, ErrorKind(400, "invalid_request_error", "invalid_adapter")),
    (AdapterNotFoundError, ErrorKind(404, "invalid_request_error", "model_not_found")),
    (AdapterExistsError, ErrorKind(409, "invalid_request_error", "adapter_exists")),
    (AuthenticationError, ErrorKind(401, "authentication_error", "invalid_api_key")),
    (PermissionDeniedError, ErrorKind(403, "permission_error", "permission_denied")),
    (EngineBusyError, ErrorKind(429, "rate_limit_error", "queue_full", retry_after=True)),
    (EngineShutdownError, ErrorKind(503, "service_unavailable", "shutting_down", retry_after=True)),
    (EngineFailedError, ErrorKind(503, "service_unavailable", "engine_error", retry_after=True)),
    (EngineStepError, ErrorKind(503, "service_unavailable", "engine_error", retry_after=True)),
    (RequestTimeoutError, ErrorKind(504, "timeout_error", "timeout")),
    (ClientDisconnected, ErrorKind(499, "client_closed_request", "client_closed_request")),
    # Server-side faults, logged where they happen; their messages name no server path.
    (AdapterIntegrityError, ErrorKind(500, "internal_error", "adapter_integrity_error")),
    (RegistryStateError, ErrorKind(500, "internal_error", "registry_state_error")),
)

_STATUS_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
# Starlette/FastAPI's own HTTP errors (unknown route, wrong method, a body that is not UTF-8 JSON): a code too.
_STATUS_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


def classify(exc: BaseException) -> ErrorKind | None:
    """The table entry for `exc`, or None for an unexpected exception."""
    for cls, kind in ERROR_TABLE:
        if isinstance(exc, cls):
            return kind
    return None


def error_response(
    status: int, message: str, type_: str, code: str | None = None, *, retry: bool = False, param: str | None = None
) -> JSONResponse:
    """An OpenAI-shaped error body with `status`."""
    body = ErrorResponse(error=ErrorInfo(message=message, type=type_, param=param, code=code))
    headers = {"Retry-After": RETRY_AFTER_S} if retry else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def error_body(exc: BaseException) -> tuple[int, dict]:
    """(status, body dict) for an exception (for errors inside an already-started SSE stream)."""
    kind = classify(exc) or ErrorKind(500, "internal_error", "internal_error")
    info = ErrorInfo(message=str(exc) or type(exc).__name__, type=kind.type, code=kind.code)
    return kind.status, ErrorResponse(error=info).model_dump()


async def _typed(request: Request, exc: Exception) -> JSONResponse:
    kind = classify(exc)
    if kind is None:
        return await _unexpected(request, exc)
    if kind.status >= 500:
        logger.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
    return error_response(kind.status, str(exc) or type(exc).__name__, kind.type, kind.code, retry=kind.retry_after)


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {}
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    message = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors)
    return error_response(400, message or "invalid request", "invalid_request_error", "invalid_parameter", param=param)


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    type_ = _STATUS_TYPES.get(exc.status_code, "invalid_request_error")
    return error_response(exc.status_code, str(exc.detail), type_, _STATUS_CODES.get(exc.status_code, "http_error"))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error; see the server log", "internal_error", "internal_error")


def register_error_handlers(app: FastAPI) -> None:
    """Install the handler table on `app`."""
    for cls, _ in ERROR_TABLE:
        app.add_exception_handler(cls, _typed)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
