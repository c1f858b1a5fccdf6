"""Tenant isolation that survives restarts, unloads and reloads, and leaks nothing (issue 10, items 1 and 3),
over real HTTP against uvicorn on 127.0.0.1."""

from __future__ import annotations

import json

import httpx
import pytest

from prefixtune.serve.errors import RegistryStateError
from prefixtune.serve.registry_state import STATE_FILE, hash_key
from tests.serve.conftest import BASE, LiveServer, serve_config, write_keys

ADMIN, TENANT_A, TENANT_B = "admin-key", "tenant-a-secret", "tenant-b-secret"


def complete(live: LiveServer, model: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "prompt": "hi", "max_tokens": 2, "temperature": 0}
    return httpx.post(live.url + "/v1/completions", json=body, headers=headers, timeout=60)


def admin(live: LiveServer, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, live.url + path, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60, **kwargs)


def visible(live: LiveServer, key: str | None) -> set[str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return {m["id"] for m in httpx.get(live.url + "/v1/models", headers=headers).json()["data"]}


def assert_only(live: LiveServer, model: str, owner: str, other: str) -> None:
    assert complete(live, model, owner).status_code == 200
    refused = complete(live, model, other)
    assert refused.status_code == 404, refused.text


@pytest.fixture
def keys_file(tmp_path) -> str:
    return write_keys(tmp_path / "keys.json", {"alpha": [TENANT_A], "beta": [TENANT_B]})


def test_access_rules_survive_reload_and_restart(private_root, keys_file):
    config = serve_config(private_root, api_key=(ADMIN,), adapter_keys=keys_file)
    live = LiveServer(config).start()
    try:
        loaded = admin(
            live, "POST", "/v1/adapters", json={"name": "delta", "path": "spare/delta", "api_keys": [TENANT_B]}
        )
        assert loaded.status_code == 201, loaded.text
        assert_only(live, "delta", TENANT_B, TENANT_A)
        # An admin unload + reload that omits api_keys keeps the configured rule (it used to open the adapter).
        assert admin(live, "DELETE", "/v1/adapters/alpha").status_code == 200
        assert admin(live, "POST", "/v1/adapters", json={"name": "alpha", "path": "alpha"}).status_code == 201
        assert_only(live, "alpha", TENANT_A, TENANT_B)
        # The same files under a new name without keys would widen access: refused.
        widen = admin(live, "POST", "/v1/adapters", json={"name": "alpha2", "path": "alpha"})
        assert widen.status_code == 400 and widen.json()["error"]["code"] == "access_rule_required", widen.text
    finally:
        live.stop()

    stored = (private_root / STATE_FILE).read_text()
    assert TENANT_A not in stored and TENANT_B not in stored  # hashes only
    assert hash_key(TENANT_B) in json.loads(stored)["rules"]["delta"]

    # Restart, even without the --adapter-keys file: the runtime load and every rule are back.
    restarted = LiveServer(serve_config(private_root, api_key=(ADMIN,))).start()
    try:
        assert_only(restarted, "delta", TENANT_B, TENANT_A)
        assert_only(restarted, "alpha", TENANT_A, TENANT_B)
        assert_only(restarted, "beta", TENANT_B, TENANT_A)
        assert visible(restarted, TENANT_A) == {BASE, "alpha", "gamma"}
        assert visible(restarted, TENANT_B) == {BASE, "beta", "delta", "gamma"}
    finally:
        restarted.stop()


def test_an_unreadable_registry_state_refuses_to_start(private_root):
    (private_root / STATE_FILE).write_text("{not json")
    with pytest.raises(RegistryStateError, match="access rules"):
        LiveServer(serve_config(private_root))  # never an empty state, which would open every adapter


def test_other_tenants_adapters_are_indistinguishable_from_missing_ones(private_root, keys_file):
    # Without admin keys too: a keyed adapter and a missing one answer a keyless caller alike (was 401 vs 404).
    for config in (
        serve_config(private_root, api_key=(ADMIN,), adapter_keys=keys_file),
        serve_config(private_root, adapter_keys=keys_file),
    ):
        live = LiveServer(config).start()
        try:
            callers = (TENANT_A, None) if config.api.api_key == () else (TENANT_A,)
            for key in callers:
                theirs, missing = complete(live, "beta", key), complete(live, "nobody", key)
                assert theirs.status_code == missing.status_code == 404
                a, b = theirs.json()["error"], missing.json()["error"]
                assert a["message"].replace("'beta'", "X") == b["message"].replace("'nobody'", "X")
                assert a["code"] == b["code"] == "model_not_found"
                for name in ("alpha", "beta", "gamma"):  # no list of registered names
                    assert name not in b["message"]
            assert "beta" not in visible(live, TENANT_A)
            for card in httpx.get(live.url + "/v1/models", headers={"Authorization": f"Bearer {ADMIN}"}).json()["data"]:
                assert str(private_root) not in card["root"]  # no server paths
        finally:
            live.stop()
