"""What an adapter directory may hold, and what is served from it (issue 10, items 5-7), over real HTTP:
file symlinks out of the root, missing base-model fingerprints, files changed after an eviction."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import httpx
import pytest

import prefixtune as pt
from tests.serve.conftest import LiveServer, save_adapter, serve_config, served_model

ADMIN = "admin-key"


def load(live: LiveServer, name: str, path: str) -> httpx.Response:
    return httpx.post(
        live.url + "/v1/adapters",
        json={"name": name, "path": path},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=60,
    )


def complete(live: LiveServer, model: str) -> httpx.Response:
    body = {"model": model, "prompt": "hi", "max_tokens": 2, "temperature": 0}
    return httpx.post(live.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)


def models(live: LiveServer) -> set[str]:
    data = httpx.get(live.url + "/v1/models", headers={"Authorization": f"Bearer {ADMIN}"}).json()["data"]
    return {m["id"] for m in data}


def linked_out(root: Path, outside: Path, name: str) -> Path:
    """root/name/: each file a symlink to an adapter's file outside the root."""
    (root / name).mkdir()
    for file in outside.iterdir():
        (root / name / file.name).symlink_to(file)
    return root / name


def with_fingerprint(root: Path, name: str, source: Path, value: object) -> Path:
    """A copy of `source` as root/name whose base_model_fingerprint is `value` (missing for ...)."""
    target = Path(shutil.copytree(source, root / name))
    config = json.loads((target / "adapter_config.json").read_text())
    if value is ...:
        config.pop("base_model_fingerprint")
    else:
        config["base_model_fingerprint"] = value
    (target / "adapter_config.json").write_text(json.dumps(config))
    return target


def test_file_symlinks_out_of_the_root_are_refused_at_runtime_and_start_up(private_root, tmp_path):
    outside = save_adapter(served_model(), pt.PrefixConfig(method="kv", num_virtual_tokens=2), tmp_path / "out")
    linked_out(private_root / "spare", outside, "sneaky")
    linked_out(private_root, outside, "sneaky-start")
    inside = private_root / "spare" / "inside"
    inside.mkdir()
    for file in (private_root / "alpha").iterdir():  # links that stay inside the root are fine
        (inside / file.name).symlink_to(file)
    live = LiveServer(serve_config(private_root, api_key=(ADMIN,))).start()
    try:
        assert "sneaky-start" not in models(live)
        refused = load(live, "sneaky", "spare/sneaky")
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_adapter_name", refused.text
        assert str(tmp_path) not in refused.json()["error"]["message"]
        assert load(live, "inside", "spare/inside").status_code == 201
        assert complete(live, "sneaky").status_code == 404
    finally:
        live.stop()


@pytest.mark.parametrize("fingerprint", [..., {}, None], ids=["missing", "empty", "null"])
def test_adapters_without_a_fingerprint_are_refused_unless_allowed(private_root, fingerprint):
    with_fingerprint(private_root / "spare", "unverified", private_root / "alpha", fingerprint)
    with_fingerprint(private_root, "unverified-start", private_root / "alpha", fingerprint)
    with_fingerprint(private_root / "spare", "malformed", private_root / "alpha", {"architecture": "x"})
    live = LiveServer(serve_config(private_root, api_key=(ADMIN,))).start()
    try:
        assert "unverified-start" not in models(live)
        refused = load(live, "unverified", "spare/unverified")
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "incompatible_base_model"
        assert "--allow-unverified-adapters" in refused.json()["error"]["message"]
    finally:
        live.stop()
    allowed = LiveServer(serve_config(private_root, api_key=(ADMIN,), allow_unverified_adapters=True)).start()
    try:
        assert "unverified-start" in models(allowed)
        assert load(allowed, "unverified", "spare/unverified").status_code == 201
        assert complete(allowed, "unverified").status_code == 200
        assert load(allowed, "malformed", "spare/malformed").status_code == 400  # malformed: never
    finally:
        allowed.stop()


def test_a_file_changed_after_eviction_is_a_server_error_not_new_weights(private_root, caplog):
    live = LiveServer(serve_config(private_root, api_key=(ADMIN,), adapter_cache_mb=0.000001)).start()  # 1 cached
    try:
        assert complete(live, "alpha").status_code == 200
        assert complete(live, "beta").status_code == 200  # alpha evicted
        other = save_adapter(
            served_model(), pt.PrefixConfig(method="prefix", num_virtual_tokens=4, seed=9), private_root / "x"
        )
        shutil.copy(other / "adapter.safetensors", private_root / "alpha" / "adapter.safetensors")  # same shapes
        with caplog.at_level(logging.ERROR, logger="prefixtune.serve.registry"):
            changed = complete(live, "alpha")
        assert changed.status_code == 500, changed.text
        error = changed.json()["error"]
        assert error["code"] == "adapter_integrity_error" and str(private_root) not in error["message"]
        assert any("alpha" in r.getMessage() and str(private_root) in r.getMessage() for r in caplog.records)
        (private_root / "alpha" / "adapter.safetensors").write_bytes(b"truncated")  # broken: also a 500
        assert complete(live, "alpha").status_code == 500
        metrics = httpx.get(live.url + "/metrics").text
        assert live.metric(metrics, "prefixtune_adapter_integrity_failures_total") == 2
        assert live.metric(metrics, 'prefixtune_requests_total{endpoint="/v1/completions",status="500"}') == 2
        assert complete(live, "beta").status_code == 200  # the rest keeps serving
    finally:
        live.stop()
