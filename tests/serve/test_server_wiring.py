"""`create_app` hands each part its own part of `ServeConfig` and its dependencies at construction (issue 11,
item 4): the engine its limits, the registry its config and where compiles run, the routes their settings."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from prefixtune.serve.server import create_app
from tests.serve.conftest import serve_config, served_model
from tests.train.conftest import make_tokenizer


def test_each_part_is_built_with_its_own_config(adapter_root):
    config = serve_config(adapter_root, max_num_seqs=3, max_waiting=5, max_model_len=48, max_n=2)
    app = create_app(served_model(), make_tokenizer(), config)
    engine = app.state.engine
    assert engine.limits is config.limits
    assert engine.core.scheduler.config is config.limits.scheduler
    assert engine.max_model_len == 48 and engine.core.runner.store.num_slots == 3
    assert engine.registry.config is config.registry
    settings = app.state.settings
    assert settings.max_n == 2 and settings.max_waiting == 5  # the queue limit comes from the engine's limits


def test_adapter_compiles_run_on_the_engine_thread(adapter_root):
    """The registry is built with the engine thread's `EngineCalls.run` (before: replaced after the fact)."""
    app = create_app(served_model(), make_tokenizer(), serve_config(adapter_root))
    compiler = app.state.engine.registry.compiler
    threads: list[str] = []
    original = compiler.compile

    def recording_compile(path):
        threads.append(threading.current_thread().name)
        return original(path)

    compiler.compile = recording_compile
    with TestClient(app) as client:  # the lifespan loads (compiles) every adapter of the root
        body = {"model": "alpha", "prompt": "hi", "max_tokens": 2, "temperature": 0}
        assert client.post("/v1/completions", json=body).status_code == 200
    assert len(threads) == 3 and set(threads) == {"prefixtune-engine"}
