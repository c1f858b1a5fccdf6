"""`prefixtune serve` as a user runs it: a subprocess on a free port, queried, then stopped with SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.serve.conftest import free_port
from tests.train.conftest import save_tiny_model


def test_cli_serves_a_model_dir_with_adapters_and_stops_cleanly(adapter_root, tmp_path):
    model_dir = save_tiny_model("llama", tmp_path / "tiny-llama")
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "prefixtune.cli.main",
        "serve",
        "--model",
        str(model_dir),
        "--adapters",
        str(adapter_root),
        "--port",
        str(port),
        "--max-num-seqs",
        "4",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        models = {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}
        assert models == {"tiny-llama", "alpha", "beta", "gamma"}
        body = {"model": "alpha", "prompt": "hi", "max_tokens": 3}
        assert httpx.post(url + "/v1/completions", json=body, timeout=60).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
