"""Every error case over real HTTP: status, OpenAI error body, Retry-After; disconnects free slots."""

from __future__ import annotations

import asyncio
import shutil
import time

import httpx
import pytest

from tests.serve.conftest import BASE, LiveServer, serve_config, write_keys

ADMIN, TENANT_A, TENANT_B = "admin-key", "tenant-a", "tenant-b"


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert set(error) >= {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.fixture(scope="module")
def secured(adapter_root, tmp_path_factory):
    keys = write_keys(tmp_path_factory.mktemp("keys") / "keys.json", {"alpha": [TENANT_A], "beta": [TENANT_B]})
    root = shutil.copytree(adapter_root, tmp_path_factory.mktemp("secured") / "adapters")  # its rules persist there
    config = serve_config(root, api_key=(ADMIN,), adapter_keys=keys, max_request_bytes=4096)
    live = LiveServer(config).start()
    yield live
    live.stop()


def post(live: LiveServer, path: str, key: str | None = ADMIN, headers: dict | None = None, **kwargs) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(live.url + path, headers=auth | (headers or {}), timeout=60, **kwargs)


def ok_body(**changes) -> dict:
    return {"model": BASE, "prompt": "hi", "max_tokens": 2, "temperature": 0} | changes


def test_authentication_and_tenant_isolation(secured):
    assert_error(post(secured, "/v1/completions", key=None, json=ok_body()), 401, "invalid_api_key")
    assert_error(post(secured, "/v1/completions", key="nope", json=ok_body()), 401, "invalid_api_key")
    assert post(secured, "/v1/completions", key=TENANT_A, json=ok_body(model="alpha")).status_code == 200
    assert post(secured, "/v1/completions", key=TENANT_A, json=ok_body(model="gamma")).status_code == 200
    # Another tenant's adapter answers exactly as one that does not exist (issue 10): nothing tells them apart.
    theirs = assert_error(post(secured, "/v1/completions", key=TENANT_A, json=ok_body(model="beta")), 404)
    nobody = assert_error(post(secured, "/v1/completions", key=TENANT_A, json=ok_body(model="nobody")), 404)
    assert theirs["code"] == nobody["code"] == "model_not_found"
    assert theirs["message"].replace("beta", "X") == nobody["message"].replace("nobody", "X")
    assert "alpha" not in nobody["message"] and "gamma" not in nobody["message"]
    assert post(secured, "/v1/completions", key=ADMIN, json=ok_body(model="beta")).status_code == 200
    seen = httpx.get(secured.url + "/v1/models", headers={"Authorization": f"Bearer {TENANT_A}"}).json()
    assert {m["id"] for m in seen["data"]} == {BASE, "alpha", "gamma"}
    load = {"name": "delta", "path": "spare/delta"}
    assert_error(post(secured, "/v1/adapters", key=TENANT_A, json=load), 403)
    assert_error(httpx.delete(secured.url + "/v1/adapters/alpha"), 401)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"temperature": 5}, "invalid_parameter"),
        ({"max_tokens": 0}, "invalid_parameter"),
        ({"n": 0}, "invalid_parameter"),
        ({"n": 9}, "invalid_request"),  # above --max-n (8)
        ({"logprobs": 21}, "invalid_parameter"),
        ({"logprobs": -1}, "invalid_parameter"),
        ({"top_p": 0}, "invalid_parameter"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "invalid_parameter"),
        ({"prompt": None}, "invalid_parameter"),
        ({"prompt": ["hi", [5]]}, "invalid_parameter"),
        ({"prompt": ["hi", ""]}, "invalid_request"),  # the second prompt is empty: nothing is queued
        ({"prompt": [500]}, "invalid_request"),
        ({"prompt": ""}, "invalid_request"),
        ({"max_tokens": 100_000}, "context_length_exceeded"),
        ({"prompt": "x" * 250, "max_tokens": 10}, "context_length_exceeded"),
    ],
)
def test_invalid_parameters_are_400(secured, changes, code):
    assert_error(post(secured, "/v1/completions", json=ok_body(**changes)), 400, code)


def test_other_statuses(secured):
    assert_error(post(secured, "/v1/completions", json=ok_body(model="nobody")), 404, "model_not_found")
    chat = {"model": "nobody", "messages": [{"role": "user", "content": "hi"}]}
    assert_error(post(secured, "/v1/chat/completions", json=chat), 404, "model_not_found")
    assert_error(post(secured, "/v1/chat/completions", json={"model": BASE, "messages": []}), 400)
    assert_error(
        post(secured, "/v1/completions", content=b"{not json", headers={"content-type": "application/json"}), 400
    )
    assert_error(post(secured, "/v1/completions", json=ok_body(prompt="x" * 5000)), 413, "request_too_large")
    assert_error(post(secured, "/v1/adapters", json={"name": "alpha", "path": "alpha"}), 409, "adapter_exists")
    assert_error(post(secured, "/v1/adapters", json={"name": "../x", "path": "alpha"}), 400, "invalid_adapter_name")
    assert_error(post(secured, "/v1/adapters", json={"name": BASE, "path": "alpha"}), 400, "invalid_adapter_name")
    deleted = httpx.delete(secured.url + "/v1/adapters/nobody", headers={"Authorization": f"Bearer {ADMIN}"})
    assert_error(deleted, 404)
    assert_error(httpx.get(secured.url + "/v1/nothing-here"), 404)


def test_queue_full_is_429_and_timeout_is_504(adapter_root):
    config = serve_config(adapter_root, max_num_seqs=1, max_waiting=1, request_timeout_s=0.1)
    live = LiveServer(config).start()
    long = ok_body(max_tokens=240, ignore_eos=True)  # ~240 engine steps: far longer than 0.1 s

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/completions", json=long) for _ in range(4)))

    try:
        responses = asyncio.run(burst())
        statuses = sorted(r.status_code for r in responses)
        assert 429 in statuses and 504 in statuses, statuses
        for r in responses:
            if r.status_code == 429:
                assert_error(r, 429, "queue_full")
                assert r.headers["Retry-After"]
            else:
                assert_error(r, 504, "timeout")
        wait_for_idle(live)
    finally:
        live.stop()


def wait_for_idle(live: LiveServer, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(live.url + "/health").json()
        if health["running"] == 0 and health["waiting"] == 0:
            return health
        assert time.monotonic() < deadline, health
        time.sleep(0.02)


def test_disconnect_mid_stream_frees_the_slot(server):
    body = {"model": "alpha", "prompt": "go", "max_tokens": 200, "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        assert first.startswith("data: {")
        assert httpx.get(server.url + "/health").json()["running"] == 1
    start = time.monotonic()
    health = wait_for_idle(server)
    assert health["free_slots"] == 8
    assert time.monotonic() - start < 5


def test_disconnect_while_waiting_for_a_whole_response_frees_the_slot(server):
    body = {"model": "beta", "prompt": "go", "max_tokens": 200, "temperature": 0, "ignore_eos": True}

    async def leave_early() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            task = asyncio.create_task(client.post("/v1/completions", json=body))
            await asyncio.sleep(0.1)
            task.cancel()  # closes the connection
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(leave_early())
    assert wait_for_idle(server)["free_slots"] == 8


def test_a_failing_step_fails_its_requests_and_the_engine_keeps_serving(server):
    runner = server.app.state.engine.core.runner
    real = runner.execute

    def broken(plan):
        runner.execute = real  # fail once
        raise RuntimeError("simulated device failure")

    runner.execute = broken
    try:
        failed = httpx.post(server.url + "/v1/completions", json=ok_body(), timeout=60)
    finally:
        runner.execute = real
    assert_error(failed, 503, "engine_error")
    assert failed.headers["Retry-After"]
    assert httpx.post(server.url + "/v1/completions", json=ok_body(), timeout=60).status_code == 200
    assert wait_for_idle(server)["free_slots"] == 8
