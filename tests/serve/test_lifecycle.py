"""Graceful shutdown: requests in flight when the server is told to stop still finish."""

from __future__ import annotations

import threading
import time

import httpx

from tests.serve.conftest import BASE, LiveServer, serve_config


def test_shutdown_finishes_in_flight_requests(adapter_root):
    live = LiveServer(serve_config(adapter_root)).start()
    results: dict[str, httpx.Response] = {}
    body = {"max_tokens": 200, "temperature": 0, "ignore_eos": True, "prompt": "drain"}

    def call(key: str, model: str, stream: bool) -> None:
        results[key] = httpx.post(
            live.url + "/v1/completions", json=body | {"model": model, "stream": stream}, timeout=60
        )

    threads = [
        threading.Thread(target=call, args=("whole", "alpha", False)),
        threading.Thread(target=call, args=("stream", BASE, True)),
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while httpx.get(live.url + "/health").json()["running"] < 2:
        assert time.monotonic() < deadline, "the requests never ran together"
        time.sleep(0.01)
    live.stop()  # while both are still generating
    for t in threads:
        t.join(30)
    assert results["whole"].status_code == 200
    assert results["whole"].json()["usage"]["completion_tokens"] == 200
    assert results["stream"].status_code == 200
    assert results["stream"].text.rstrip().endswith("data: [DONE]")
    assert '"finish_reason":"length"' in results["stream"].text
