"""Fixtures for the vLLM engine: a tiny random Llama vLLM's CPU backend can run (head size 32), adapters with
independent random per-layer values, and `prefixtune serve --engine vllm` as a real subprocess.

These tests need vLLM (`make setup-vllm`; CI runs them in .venv-vllm) and are skipped without it. Each test
module starts one engine: vLLM takes about half a minute to start on this CPU.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
import transformers

import prefixtune as pt
from tests.train.conftest import make_tokenizer

BLOCK_SIZE = 32  # the CPU backend's smallest block
# m = 1, m not a multiple of the block size, m spanning two blocks; one adapter per method.
ADAPTERS = {
    "one": pt.PrefixConfig(method="prefix", num_virtual_tokens=1),
    "five": pt.PrefixConfig(method="kv", num_virtual_tokens=5),
    "forty": pt.PrefixConfig(method="prompt", num_virtual_tokens=40),
}


def make_vllm_model(seed: int = 0) -> transformers.LlamaForCausalLM:
    """Tiny Llama with grouped-query attention and head size 32 (the CPU backend's smallest)."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
    )
    return transformers.LlamaForCausalLM(config).eval()


def randomize(pm: pt.PrefixModel, name: str, seed: int) -> None:
    """Independent random values in every layer (an untrained vocab init would be prompt tuning in disguise)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in pm.adapters[name].parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.7)


def save_adapter(model: torch.nn.Module, config: pt.PrefixConfig, path: Path, seed: int) -> Path:
    pm = pt.attach(model, config, adapter_name="a")
    randomize(pm, "a", seed)
    pm.save_adapter(path, "a")
    return path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("vllm-llama")
    make_vllm_model().save_pretrained(directory)
    make_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def adapter_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vllm-adapters")
    model = make_vllm_model()
    for seed, (name, config) in enumerate(ADAPTERS.items()):
        save_adapter(model, config, root / name, seed=10 + seed)
    return root


def reference_model(adapter_root: Path) -> pt.PrefixModel:
    """prefixtune's own model with every test adapter attached (the reference for token equality)."""
    model = make_vllm_model()
    pm = None
    for name in ADAPTERS:
        pm = pt.load_adapter(model if pm is None else pm, adapter_root / name, adapter_name=name)
    return pm


def reference_greedy(pm: pt.PrefixModel, adapter: str | None, prompt: list[int], max_tokens: int) -> list[int]:
    """prefixtune's `generate`, greedy, stopping at EOS (id 2) as the servers do."""
    with torch.no_grad():
        out = pm.generate(
            torch.tensor([prompt]), adapter_names=[adapter], max_new_tokens=max_tokens, do_sample=False, eos_token_id=2
        )
    tokens = out[0, len(prompt) :].tolist()
    return tokens[: tokens.index(2)] if 2 in tokens else tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmServer:
    """`prefixtune serve --engine vllm` in a subprocess on 127.0.0.1 (stopped with SIGINT: a graceful drain)."""

    def __init__(
        self, model_dir: Path, adapter_root: Path, kv_dir: Path, log: Path, *flags: str, env: dict | None = None
    ) -> None:
        self.port = free_port()
        self.log, self.env = log, env or {}
        self.command = [
            sys.executable, "-m", "prefixtune.cli.main", "serve", "--engine", "vllm",
            "--model", str(model_dir), "--served-model-name", "tiny", "--adapters", str(adapter_root),
            "--port", str(self.port), "--max-model-len", "256", "--max-num-seqs", "16",
            "--max-num-batched-tokens", "512", "--vllm-dtype", "float32", "--vllm-enforce-eager",
            "--vllm-block-size", str(BLOCK_SIZE), "--vllm-kv-dir", str(kv_dir), "--vllm-kv-cache-gb", "0.0625",
            "--vllm-gpu-memory-utilization", "0.3", *flags,
        ]  # fmt: skip
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 240.0) -> VllmServer:
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), **self.env)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def complete(self, model: str, prompt: list[int], max_tokens: int = 12, **extra) -> httpx.Response:
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **extra}
        return httpx.post(self.url + "/v1/completions", json=body, timeout=120)


class BuiltinServer:
    """The built-in engine (`--engine prefixtune`) under uvicorn in a thread, for side-by-side comparisons."""

    def __init__(self, model: torch.nn.Module, tokenizer, config) -> None:
        import uvicorn

        from prefixtune.serve.server import create_app

        self.port = free_port()
        app = create_app(model, tokenizer, config)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BuiltinServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("built-in server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def completion_tokens(response: httpx.Response, tokenizer) -> list[int]:
    """The generated tokens of a greedy completion, re-tokenized from its text (the char tokenizer is 1:1)."""
    assert response.status_code == 200, response.text
    text = response.json()["choices"][0]["text"]
    return tokenizer(text, add_special_tokens=False)["input_ids"]
