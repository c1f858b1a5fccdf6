"""Shared dependencies of the routes (`Annotated` aliases) and the access rules for API keys.

Access rules:
- `--api-key` keys are admin keys: they may use every model and load/unload adapters. When any are set,
  every /v1 request needs a key: an admin key or the key of some adapter (else 401).
- An adapter registered with `api_keys` may be used only with one of them or an admin key (else 403, or 401
  without a key): one tenant cannot use another tenant's adapter. Adapters without keys and the base model
  are open to every request that passed the first rule.
- Without admin keys, loading and unloading adapters is open (bind to loopback, or set --api-key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from prefixtune.serve.api.errors import AuthenticationError, PermissionDeniedError
from prefixtune.serve.engine.messages import AdapterInfo
from prefixtune.serve.engine.protocol import Engine
from prefixtune.serve.metrics import ServeMetrics


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """HTTP-layer settings (the CLI flags of the same names).

    Attributes:
        api_keys: admin keys (empty: no global authentication).
        max_request_bytes: largest request body accepted (413 above).
        request_timeout_s: a request still running after this is cancelled (504, or an error event).
        default_max_tokens: chat completions without max_tokens generate at most this many.
        max_n: the largest `n` (choices per prompt) a request may ask for.
        keepalive_s: idle seconds between SSE keep-alive comments.
    """

    api_keys: frozenset[str] = frozenset()
    max_request_bytes: int = 1 << 20
    request_timeout_s: float = 600.0
    default_max_tokens: int = 256
    max_n: int = 8
    keepalive_s: float = 15.0


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def get_metrics(request: Request) -> ServeMetrics:
    return request.app.state.metrics


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
MetricsDep = Annotated[ServeMetrics, Depends(get_metrics)]


@dataclass(frozen=True, slots=True)
class Access:
    """Who is calling: the bearer key (or None) and whether it is an admin key."""

    key: str | None
    is_admin: bool

    def may_use(self, info: AdapterInfo) -> bool:
        return self.is_admin or not info.api_keys or (self.key is not None and self.key in info.api_keys)

    def adapter_for(self, engine: Engine, model: str) -> str | None:
        """The adapter a request's `model` selects (None: the base model).

        Raises:
            AdapterNotFoundError: unknown model (404). AuthenticationError / PermissionDeniedError: not allowed.
        """
        if model == engine.model_name:
            return None
        info = engine.get_adapter(model)
        if not self.may_use(info):
            if self.key is None:
                raise AuthenticationError(f"model {model!r} needs an API key (Authorization: Bearer ...)")
            raise PermissionDeniedError(f"this API key may not use model {model!r}")
        return model


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def get_access(request: Request, engine: EngineDep, settings: SettingsDep) -> Access:
    """Authenticate the caller (401 when admin keys are set and the key is neither admin nor a tenant's)."""
    key = bearer_key(request)
    is_admin = key is not None and key in settings.api_keys
    if settings.api_keys and not is_admin:
        tenant_keys = {k for info in engine.list_adapters() for k in info.api_keys}
        if key is None:
            raise AuthenticationError("missing API key: send Authorization: Bearer <key>")
        if key not in tenant_keys:
            raise AuthenticationError("invalid API key")
    return Access(key=key, is_admin=is_admin)


def require_admin(access: Annotated[Access, Depends(get_access)], settings: SettingsDep) -> Access:
    if settings.api_keys and not access.is_admin:
        raise PermissionDeniedError("loading and unloading adapters needs an admin key (--api-key)")
    return access


AccessDep = Annotated[Access, Depends(get_access)]
AdminDep = Annotated[Access, Depends(require_admin)]
