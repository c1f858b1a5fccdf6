"""Assembling a server from a model and a `ServeConfig`: metrics, registry, engine, app; and running it.

The one place that wires the parts together (used by `prefixtune serve` and by the end-to-end tests): each
part gets its own part of the config (`config.limits`, `config.registry`, `config.api`, `config.http`) and its
dependencies at construction.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from torch import nn

from prefixtune.errors import ConfigError
from prefixtune.serve.api.app import build_app
from prefixtune.serve.compiler import PrefixAdapterCompiler
from prefixtune.serve.config import ServeConfig
from prefixtune.serve.engine.calls import EngineCalls
from prefixtune.serve.engine.engine import AsyncEngine
from prefixtune.serve.engine.protocol import Engine
from prefixtune.serve.metrics import ServeMetrics
from prefixtune.serve.registry import AdapterRegistry

logger = logging.getLogger(__name__)


def read_adapter_keys(path: str | None) -> dict[str, list[str]]:
    """The per-adapter keys file: {"adapter": ["key", ...]}."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read --adapter-keys {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(k, str) for k in v) for v in data.values()
    ):
        raise ConfigError(f"--adapter-keys {path} must hold a JSON object of adapter name -> list of keys")
    return data


def build_engine(
    model: nn.Module, tokenizer: Any, config: ServeConfig, metrics: ServeMetrics, root: Path | None, name: str
) -> tuple[Engine, AdapterRegistry]:
    """The engine `config.engine` names, with its registry (same rules for both; the compiled form differs)."""
    if config.engine == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise ConfigError(
                "--engine vllm needs vLLM, which is not installed in this environment: run `make setup-vllm` "
                "(CPU) and use .venv-vllm/bin/prefixtune, or `pip install 'prefixtune[vllm]'` (GPU)"
            )
        from prefixtune.vllm.server import build_vllm_engine

        return build_vllm_engine(model, tokenizer, config, metrics, root, name)
    calls = EngineCalls()  # compiles run on the engine thread, between steps: given to both at construction
    registry = AdapterRegistry(
        root,
        PrefixAdapterCompiler(model, allow_unverified=config.registry.allow_unverified_adapters),
        config.registry,
        metrics=metrics,
        run_compile=calls.run,
        reserved_names=(name,),
    )
    engine = AsyncEngine(model, tokenizer, registry, config.limits, metrics, model_name=name, calls=calls)
    return engine, registry


def create_app(model: nn.Module, tokenizer: Any, config: ServeConfig) -> FastAPI:
    """The server application for a loaded model (the engine starts with the app's lifespan)."""
    config.validate()
    metrics = ServeMetrics()
    name = config.served_model_name or Path(config.model).name
    root = Path(config.adapters) if config.adapters else None
    if root is not None and not root.is_dir():
        raise ConfigError(f"--adapters {root} is not a directory")
    engine, registry = build_engine(model, tokenizer, config, metrics, root, name)
    # The routes refuse (400) a request with more sequences than the engine ever queues (not a flag of the API's).
    settings = dataclasses.replace(config.api, max_waiting=config.limits.scheduler.max_waiting)
    keys = read_adapter_keys(config.adapter_keys)

    async def load_root() -> None:
        loaded = await registry.load_root(keys)
        logger.info("loaded %d adapters from %s", len(loaded), root)

    return build_app(engine, settings, metrics, on_startup=load_root, drain_timeout_s=config.http.drain_timeout_s)


def serve(config: ServeConfig) -> None:
    """Load the model and run the server until interrupted (SIGINT/SIGTERM drain gracefully)."""
    import uvicorn

    from prefixtune.models import load_model

    config.validate()
    model, tokenizer = load_model(config.model)
    app = create_app(model, tokenizer, config)
    http = config.http
    uvicorn.run(
        app,
        host=http.host,
        port=http.port,
        log_level="info",
        timeout_graceful_shutdown=int(http.drain_timeout_s) or None,
        timeout_keep_alive=max(1, int(http.timeout_keep_alive_s)),
        limit_concurrency=http.limit_concurrency,
    )
