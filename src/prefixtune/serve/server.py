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

from prefixtune.core import has_bidirectional_attention
from prefixtune.errors import ConfigError
from prefixtune.serve.api.app import build_app
from prefixtune.serve.compiler import PrefixAdapterCompiler
from prefixtune.serve.config import ServeConfig
from prefixtune.serve.encoder_compiler import EncoderAdapterCompiler
from prefixtune.serve.encoder_loading import (
    check_encoder_engine,
    is_encoder,
    is_sequence_classifier,
    load_served_encoder,
)
from prefixtune.serve.engine.calls import EngineCalls
from prefixtune.serve.engine.encoder_engine import EncoderEngine
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
    model: nn.Module,
    tokenizer: Any,
    config: ServeConfig,
    metrics: ServeMetrics,
    root: Path | None,
    name: str,
    *,
    has_trained_head: bool | None = None,
) -> tuple[Engine, AdapterRegistry]:
    """The engine `config.engine` names, with its registry (same rules for both; the compiled form differs).
    An encoder base model gets the classification engine (`EncoderEngine`; the built-in engine only)."""
    if has_bidirectional_attention(model):
        trained = is_sequence_classifier(model) if has_trained_head is None else has_trained_head
        return _build_encoder_engine(model, tokenizer, config, metrics, root, name, trained)
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


def _build_encoder_engine(
    model: nn.Module,
    tokenizer: Any,
    config: ServeConfig,
    metrics: ServeMetrics,
    root: Path | None,
    name: str,
    trained: bool,
) -> tuple[Engine, AdapterRegistry]:
    """The classify engine for an encoder with a sequence-classification head (issue 12, item 6)."""
    check_encoder_engine(config.engine, config.model)
    if not is_sequence_classifier(model):
        raise ConfigError(
            f"the encoder {config.model!r} ({type(model).__name__}) has no sequence-classification head; serve it "
            "as a ...ForSequenceClassification (`prefixtune serve --model` loads one: load_served_encoder)"
        )
    calls = EngineCalls()  # compiles run on the engine thread, between batches
    compiler = EncoderAdapterCompiler(
        model, allow_unverified=config.registry.allow_unverified_adapters, has_trained_head=trained
    )
    registry = AdapterRegistry(
        root, compiler, config.registry, metrics=metrics, run_compile=calls.run, reserved_names=(name,)
    )
    engine = EncoderEngine(
        model, tokenizer, registry, config.limits, metrics, model_name=name, calls=calls, has_trained_head=trained
    )
    return engine, registry


def create_app(
    model: nn.Module, tokenizer: Any, config: ServeConfig, *, has_trained_head: bool | None = None
) -> FastAPI:
    """The server application for a loaded model (the engine starts with the app's lifespan).

    `has_trained_head`: for an encoder, whether its own sequence head is trained (None: whenever it is a
    `...ForSequenceClassification`); an untrained one serves only adapters with their own head."""
    config.validate()
    metrics = ServeMetrics()
    name = config.served_model_name or Path(config.model).name
    root = Path(config.adapters) if config.adapters else None
    if root is not None and not root.is_dir():
        raise ConfigError(f"--adapters {root} is not a directory")
    engine, registry = build_engine(model, tokenizer, config, metrics, root, name, has_trained_head=has_trained_head)
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
    trained = None
    if is_encoder(config.model):
        check_encoder_engine(config.engine, config.model)  # before loading anything
        model, tokenizer, trained = load_served_encoder(config.model)
    else:
        model, tokenizer = load_model(config.model)
    app = create_app(model, tokenizer, config, has_trained_head=trained)
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
