"""Issue 10's tenant-isolation and bad-input rules hold on `--engine vllm` too (the registry, auth and HTTP
layer are shared; this proves the wiring): per-adapter keys, identical 404s for "not yours" and "missing",
no 5xx for bad input, the context limit in the user's tokens, and access rules that survive a restart."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from tests.vllm.conftest import VllmServer

pytest.importorskip("vllm", reason="the vLLM engine tests need vLLM: run `make setup-vllm` (CI runs them)")

ADMIN, TENANT_A, TENANT_B = "admin-key", "tenant-a", "tenant-b"
SURROGATE = "\ud800"


@pytest.fixture(scope="module")
def setup(model_dir, adapter_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("vllm-isolation")
    root = shutil.copytree(adapter_root, work / "adapters", ignore=shutil.ignore_patterns("bad-*", "spare-*", ".*"))
    keys = work / "keys.json"
    keys.write_text(json.dumps({"five": [TENANT_A], "forty": [TENANT_B]}))
    flags = ("--api-key", ADMIN, "--adapter-keys", str(keys))
    server = VllmServer(model_dir, root, work / "kv", work / "server.log", *flags).start()
    yield server, root, work, flags
    server.stop()


def post(server: VllmServer, path: str, body: object, key: str) -> httpx.Response:
    headers = {"content-type": "application/json", "Authorization": f"Bearer {key}"}
    return httpx.post(server.url + path, content=json.dumps(body).encode(), headers=headers, timeout=60)


def completion(model: str, prompt: object = (5, 6, 7), **extra) -> dict:
    return {"model": model, "prompt": list(prompt) if isinstance(prompt, tuple) else prompt, "max_tokens": 4,
            "temperature": 0, **extra}  # fmt: skip


def test_a_tenant_sees_only_its_adapters_and_cannot_tell_others_from_missing(setup) -> None:
    server, *_ = setup
    assert post(server, "/v1/completions", completion("five"), TENANT_A).status_code == 200
    theirs = post(server, "/v1/completions", completion("forty"), TENANT_A)
    missing = post(server, "/v1/completions", completion("no-such-adapter"), TENANT_A)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"]["message"].replace("forty", "X") == missing.json()["error"]["message"].replace(
        "no-such-adapter", "X"
    )
    models = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {TENANT_A}"}).json()
    assert "forty" not in {m["id"] for m in models["data"]} and "five" in {m["id"] for m in models["data"]}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", completion("five", "a" + SURROGATE)),
        ("/v1/completions", completion("five", ["ok", SURROGATE])),
        ("/v1/chat/completions", {"model": "five", "messages": [{"role": "user", "content": SURROGATE}]}),
        ("/v1/adapters", {"name": "x", "path": "five\x00"}),
        ("/v1/completions", completion("five", [5] * 300)),  # over the context
        ("/v1/completions", completion("five", (5, 999))),  # outside the vocabulary
        ("/v1/completions", completion("five", echo=True, logprobs=1)),  # prompt logprobs with an adapter
    ],
)
def test_bad_input_is_a_4xx_never_a_5xx(setup, path, body) -> None:
    server, *_ = setup
    response = post(server, path, body, ADMIN)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"]


def test_the_context_limit_is_stated_in_the_users_tokens(setup) -> None:
    """max_model_len 256, adapter m = 40: the user has 216 tokens; 210 + 4 fit, 214 + 4 do not."""
    server, *_ = setup
    assert post(server, "/v1/completions", completion("forty", [5] * 210), TENANT_B).status_code == 200
    response = post(server, "/v1/completions", completion("forty", [5] * 214), TENANT_B)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert "216" in response.json()["error"]["message"]


def test_access_rules_survive_a_restart(setup) -> None:
    """A key given at runtime is still required after the server restarts."""
    server, root, work, flags = setup
    loaded = post(server, "/v1/adapters", {"name": "late", "path": "one", "api_keys": [TENANT_B]}, ADMIN)
    assert loaded.status_code == 201, loaded.text
    server.stop()
    again = VllmServer(server.command[server.command.index("--model") + 1], root, work / "kv", work / "2.log", *flags)
    again.start()
    try:
        assert post(again, "/v1/completions", completion("late"), TENANT_B).status_code == 200
        assert post(again, "/v1/completions", completion("late"), TENANT_A).status_code == 404
    finally:
        again.stop()
