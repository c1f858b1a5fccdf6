"""`prefixtune serve` as a user runs it: a subprocess on a free port, queried, then stopped with SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.serve.conftest import free_port
from tests.train.conftest import save_tiny_model


def start(args: list[str]) -> tuple[subprocess.Popen, str]:
    """`prefixtune serve ARGS` on a free port; returns the process and its URL once /health answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "prefixtune.cli.main", "serve", "--port", str(port), *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read())
        try:
            if httpx.get(url + "/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop(proc)
            raise AssertionError("the server did not come up")
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> str:
    """SIGINT (drain, then exit 0); returns the output."""
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    return output


def test_cli_serves_a_model_dir_with_adapters_and_stops_cleanly(adapter_root, tmp_path):
    model_dir = save_tiny_model("llama", tmp_path / "tiny-llama")
    proc, url = start(["--model", str(model_dir), "--adapters", str(adapter_root), "--max-num-seqs", "4"])
    try:
        models = {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}
        assert models == {"tiny-llama", "alpha", "beta", "gamma"}
        body = {"model": "alpha", "prompt": "hi", "max_tokens": 3}
        assert httpx.post(url + "/v1/completions", json=body, timeout=60).status_code == 200
    finally:
        stop(proc)


@pytest.mark.slow
def test_cli_serves_the_builtin_model_without_adapters():
    proc, url = start(["--max-num-seqs", "2", "--max-model-len", "256"])
    try:
        models = [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]]
        assert models == ["smollm2-135m"]
        chat = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 5}
        response = httpx.post(url + "/v1/chat/completions", json=chat, timeout=120)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"]
        refused = httpx.post(url + "/v1/adapters", json={"name": "x", "path": "x"})
        assert refused.status_code == 400 and "--adapters" in refused.json()["error"]["message"]
    finally:
        stop(proc)
