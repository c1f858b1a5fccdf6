"""Shared dependencies of the routes (`Annotated` aliases) and the access rules for API keys.

Access rules:
- `--api-key` keys are admin keys: they may use every model and load/unload adapters. When any are set,
  every /v1 request needs a key: an admin key or the key of some adapter (else 401).
- An adapter registered with `api_keys` (or listed in `--adapter-keys`) may be used only with one of them or
  an admin key; keys are compared by their sha256, the only form the registry keeps. To any other caller it
  answers exactly as a model that does not exist (404, one message), and `/v1/models` does not list it: a
  tenant learns nothing about other tenants' adapters, not even their names (issue 10). Adapters without keys
  and the base model are open to every request that passed the first rule.
- Without admin keys, loading and unloading adapters is open (bind to loopback, or set --api-key).
- `/metrics` needs an admin key when `metrics_require_key` is set (and admin keys exist).

The settings themselves (`ApiSettings`) live in `api/settings.py`, a part of `ServeConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from prefixtune.errors import AdapterNotFoundError
from prefixtune.serve.api.errors import AuthenticationError, PermissionDeniedError
from prefixtune.serve.api.settings import ApiSettings
from prefixtune.serve.engine.messages import AdapterInfo
from prefixtune.serve.engine.protocol import Engine
from prefixtune.serve.metrics import ServeMetrics
from prefixtune.serve.registry_state import hash_key


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
    """Who is calling: the bearer key (or None), its sha256, and whether it is an admin key."""

    key: str | None
    is_admin: bool

    @property
    def key_hash(self) -> str | None:
        return None if self.key is None else hash_key(self.key)

    def may_use(self, info: AdapterInfo) -> bool:
        return self.is_admin or not info.key_sha256 or self.key_hash in info.key_sha256

    def adapter_for(self, engine: Engine, model: str) -> str | None:
        """The adapter a request's `model` selects (None: the base model).

        Raises:
            AdapterNotFoundError: unknown model, or one this caller may not use: the same 404 and message
                for both, so existence is not revealed.
        """
        if model == engine.model_name:
            return None
        try:
            info: AdapterInfo | None = engine.get_adapter(model)
        except AdapterNotFoundError:
            if self.is_admin:
                raise
            info = None
        if info is None or not self.may_use(info):
            hint = "send the API key that may use it" if self.key is None else "check the name and the API key"
            raise AdapterNotFoundError(
                f"the model {model!r} does not exist or this caller may not use it; {hint} (GET /v1/models lists "
                "the models you may use)"
            )
        return model


def bearer_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def get_access(request: Request, engine: EngineDep, settings: SettingsDep) -> Access:
    """Authenticate the caller (401 when admin keys are set and the key is neither admin nor a tenant's)."""
    key = bearer_key(request)
    is_admin = key is not None and key in settings.api_keys
    access = Access(key=key, is_admin=is_admin)
    if settings.api_keys and not is_admin:
        if key is None:
            raise AuthenticationError("missing API key: send Authorization: Bearer <key>")
        if not any(access.key_hash in info.key_sha256 for info in engine.list_adapters()):
            raise AuthenticationError("invalid API key")
    return access


def require_admin(access: Annotated[Access, Depends(get_access)], settings: SettingsDep) -> Access:
    if settings.api_keys and not access.is_admin:
        raise PermissionDeniedError("loading and unloading adapters needs an admin key (--api-key)")
    return access


def require_metrics_access(request: Request, settings: SettingsDep) -> None:
    """With `metrics_require_key` and admin keys set, /metrics needs an admin key (401 without, 403 other)."""
    if not (settings.metrics_require_key and settings.api_keys):
        return
    key = bearer_key(request)
    if key is None:
        raise AuthenticationError("missing API key: /metrics needs an admin key (Authorization: Bearer <key>)")
    if key not in settings.api_keys:
        raise PermissionDeniedError("/metrics needs an admin key (--api-key)")


AccessDep = Annotated[Access, Depends(get_access)]
AdminDep = Annotated[Access, Depends(require_admin)]
MetricsAccessDep = Annotated[None, Depends(require_metrics_access)]
