"""`ApiSettings` (what the routes enforce) and `HttpConfig` (what uvicorn listens with): fields and defaults, once.

One job: the HTTP side's configuration, as parts of `ServeConfig` (one field = one `prefixtune serve` flag).
Pure Python: no FastAPI, no torch, so the CLI builds its flags from it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefixtune.config_sections import flag_help


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """HTTP-layer settings (the CLI flags of the same names).

    Attributes:
        api_key: admin keys (empty: no global authentication); `api_keys` is the same as a set.
        max_request_bytes: largest request body accepted (413 above).
        request_timeout_s: a request still running after this is cancelled (504, or an error event).
        default_max_tokens: chat completions without max_tokens generate at most this many.
        max_n: the largest `n` (choices per prompt) a request may ask for.
        metrics_require_key: /metrics needs an admin key (when admin keys are set).
        keepalive_s: idle seconds between SSE keep-alive comments (no flag).
        max_waiting: the engine's queue limit, set by the server from `EngineLimits` (no flag of its own); a
            request with more sequences (n x prompts) can never be queued, so it is a 400, not a 429 (None:
            not checked here).
    """

    api_key: tuple[str, ...] = field(
        default=(), metadata=flag_help("Admin API key(s): needed for every request and for loading adapters.")
    )
    max_request_bytes: int = field(default=1 << 20, metadata=flag_help("Largest request body (413 above)."))
    request_timeout_s: float = field(default=600.0, metadata=flag_help("Cancel requests running longer (504)."))
    default_max_tokens: int = field(default=256, metadata=flag_help("max_tokens of chat requests that omit it."))
    max_n: int = field(
        default=8, metadata=flag_help("Largest n (choices per prompt) a request may ask; each choice is a sequence.")
    )
    metrics_require_key: bool = field(
        default=False, metadata=flag_help("/metrics needs an admin key (--api-key); off: /metrics is open.")
    )
    keepalive_s: float = field(default=15.0, metadata={"flag": False})
    max_waiting: int | None = field(default=None, metadata={"flag": False})

    @property
    def api_keys(self) -> frozenset[str]:
        """The admin keys as a set."""
        return frozenset(self.api_key)

    def problems(self) -> list[str]:
        out = []
        for name in ("max_request_bytes", "default_max_tokens", "max_n"):
            if getattr(self, name) < 1:
                out.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.request_timeout_s <= 0:
            out.append(f"request_timeout_s={self.request_timeout_s} must be > 0")
        return out


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """Where and how the server listens (uvicorn), and how long shutdown drains (the CLI flags of the same names).

    Attributes:
        host, port: the interface and TCP port to bind.
        drain_timeout_s: on shutdown, how long running requests may finish.
        timeout_keep_alive_s: idle keep-alive connections close after this.
        limit_concurrency: most open connections (uvicorn answers 503 above); None: no limit.
    """

    host: str = field(default="127.0.0.1", metadata=flag_help("Interface to bind."))
    port: int = field(default=8000, metadata=flag_help("TCP port."))
    drain_timeout_s: float = field(default=30.0, metadata=flag_help("On shutdown, wait this long for requests."))
    timeout_keep_alive_s: float = field(
        default=5.0, metadata=flag_help("Close an idle keep-alive connection after this many seconds (uvicorn).")
    )
    limit_concurrency: int | None = field(
        default=1024,
        metadata=flag_help("Most open connections (uvicorn answers 503 above); bounds slow clients holding sockets."),
    )

    def problems(self) -> list[str]:
        out = []
        if not 0 < self.port < 65536:
            out.append(f"port={self.port} must be in 1..65535")
        if self.drain_timeout_s < 0:
            out.append(f"drain_timeout_s={self.drain_timeout_s} must be >= 0")
        if self.timeout_keep_alive_s <= 0:
            out.append(f"timeout_keep_alive_s={self.timeout_keep_alive_s} must be > 0")
        if self.limit_concurrency is not None and self.limit_concurrency < 1:
            out.append(f"limit_concurrency={self.limit_concurrency} must be >= 1 (or none)")
        return out
