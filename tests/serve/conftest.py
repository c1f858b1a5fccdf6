"""Fixtures for serve/: a tiny random Llama with a character tokenizer, an adapter root with three adapters
(one per method) made on it, and a real uvicorn server on a free loopback port. Nothing is downloaded."""

from __future__ import annotations

import functools
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import uvicorn

import prefixtune as pt
from prefixtune.core.inject import prefix_forward
from prefixtune.serve.config import ServeConfig
from prefixtune.serve.server import create_app
from tests.conftest import make_model
from tests.train.conftest import make_tokenizer

BASE = "tiny-llama"
ADAPTERS = {
    "alpha": pt.PrefixConfig(method="prefix", num_virtual_tokens=4, seed=1),
    "beta": pt.PrefixConfig(method="kv", num_virtual_tokens=6, seed=2),
    "gamma": pt.PrefixConfig(method="prompt", num_virtual_tokens=3, seed=3),
}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy machine two OpenMP threads in the main
    thread can make each op wait a whole scheduler tick (seen: 100x slower). Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def served_model() -> torch.nn.Module:
    """The base model every test serves (same seed, so the same weights and fingerprint every time)."""
    return make_model("llama")


def save_adapter(model: torch.nn.Module, config: pt.PrefixConfig, path: Path) -> Path:
    pm = pt.attach(model, config, adapter_name="a")
    pm.save_adapter(path, "a")
    return path


@pytest.fixture(scope="session")
def adapter_root(tmp_path_factory) -> Path:
    """root/{alpha,beta,gamma}: adapters on the served model; root/spare/: adapters to load at runtime
    (delta: valid; wrongbase: made on other weights; broken: not an adapter)."""
    root = tmp_path_factory.mktemp("adapters")
    model = served_model()
    for name, config in ADAPTERS.items():
        save_adapter(model, config, root / name)
    spare = root / "spare"
    save_adapter(model, pt.PrefixConfig(method="kv", num_virtual_tokens=2, seed=4), spare / "delta")
    save_adapter(make_model("llama", seed=1), pt.PrefixConfig(method="kv", num_virtual_tokens=2), spare / "wrongbase")
    (spare / "broken").mkdir()
    (spare / "broken" / "adapter_config.json").write_text("{not json")
    return root


@pytest.fixture
def private_root(adapter_root, tmp_path) -> Path:
    """A copy of `adapter_root` for tests that change the registry's persisted state (runtime loads, keys)."""
    return Path(shutil.copytree(adapter_root, tmp_path / "adapters", symlinks=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A real uvicorn server in a thread on 127.0.0.1 (of `app`, default: the tiny Llama served with `config`)."""

    def __init__(self, config: ServeConfig, app=None) -> None:
        app = app if app is not None else create_app(served_model(), make_tokenizer(), config)
        self.app = app
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=10)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def metric(self, text: str, name: str) -> float:
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)


def serve_config(root: Path, **changes) -> ServeConfig:
    base = ServeConfig.from_flat(
        model=BASE, adapters=str(root), max_num_seqs=8, max_num_batched_tokens=64, adapter_cache_mb=64
    )
    return base.replace(**changes)


@pytest.fixture(scope="module")
def server(adapter_root) -> Iterator[LiveServer]:
    live = LiveServer(serve_config(adapter_root)).start()
    yield live
    live.stop()


def write_keys(path: Path, keys: dict[str, list[str]]) -> str:
    path.write_text(json.dumps(keys))
    return str(path)


def greedy_reference(adapter_dir: Path | None, prompt_ids: list[int], max_tokens: int, eos: int = 2) -> list[int]:
    """What the request must produce: a no-cache greedy loop over the core's forward, on a fresh model."""
    model = served_model()
    kv = None
    if adapter_dir is not None:
        with torch.no_grad():
            kv = pt.load_adapter(model, adapter_dir, adapter_name="ref").compile("ref").detach()
    ids = list(prompt_ids)
    out: list[int] = []
    for _ in range(max_tokens):
        with torch.no_grad():
            logits = prefix_forward(model, torch.tensor([ids]), prefix_kvs=[kv]).logits[0, -1]
        token = int(logits.argmax())
        if token == eos:
            break
        out.append(token)
        ids.append(token)
    return out


@functools.lru_cache(maxsize=8)
def _reference_model(adapter_dir: Path | None) -> tuple[torch.nn.Module, object]:
    model = served_model()
    kv = None
    if adapter_dir is not None:
        with torch.no_grad():
            kv = pt.load_adapter(model, adapter_dir, adapter_name="ref").compile("ref").detach()
    return model, kv


def reference_logprobs(adapter_dir: Path | None, ids: list[int]) -> torch.Tensor:
    """(len(ids), V): log_softmax of one no-cache forward through the core with the adapter's compiled prefix,
    on a fresh model; row p scores token p + 1."""
    model, kv = _reference_model(adapter_dir)
    with torch.no_grad():
        return prefix_forward(model, torch.tensor([ids]), prefix_kvs=[kv]).logits[0].float().log_softmax(-1)


def greedy_tokens(adapter_dir: Path | None, prompt_ids: list[int], max_tokens: int, eos: int = 2) -> list[int]:
    """The tokens a greedy request generates and reports: `greedy_reference`, plus the EOS token if it ended."""
    out = greedy_reference(adapter_dir, prompt_ids, max_tokens, eos)
    return [*out, eos] if len(out) < max_tokens else out
