"""POST /v1/classify on a real server (uvicorn on 127.0.0.1, httpx): an encoder's adapters classify with their
own prefix and head, equal to the library's `encoder_forward`; mixed batches equal each row alone; keys,
errors, metrics and reloads as the completion routes (issue 12, item 6)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import prefixtune as pt
from prefixtune.errors import ConfigError
from prefixtune.serve import server as server_module
from prefixtune.serve.config import ServeConfig
from prefixtune.serve.server import create_app
from tests.encoders.models import make_encoder
from tests.serve.classify_models import BASE, LABELS, load, reference_probs, save_classifier_adapter, save_encoder
from tests.serve.conftest import LiveServer, write_keys
from tests.train.conftest import make_tokenizer

OWN_LABELS = ["bad", "meh", "good"]
CLASSIFICATION = {"kind": "classification", "labels": OWN_LABELS, "verbalizer": {k: f" {k}" for k in OWN_LABELS}}
ADAPTERS = {  # name -> (config, seed, task format in the metadata)
    "own_head": (pt.PrefixConfig(method="prefix", num_virtual_tokens=4, seed=1, train_head=True), 1, CLASSIFICATION),
    "frozen_head": (pt.PrefixConfig(method="kv", num_virtual_tokens=3, seed=2, init="random"), 2, None),
    "prompted": (pt.PrefixConfig(method="prompt", num_virtual_tokens=2, seed=3, train_head=True), 3, None),
    "tagger": (pt.PrefixConfig(num_virtual_tokens=2, seed=4, train_head=True), 4, {"kind": "token_classification"}),
    # its own fresh linear head on the mean of the real tokens' last states, not the model's pooler + classifier
    "mean_head": (pt.PrefixConfig(num_virtual_tokens=3, seed=8, train_head=True, head_pooling="mean"), 8, None),
}
TEXTS = ["a gripping, funny film", "dull.", "x", "the plot drags but the cast is great"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    return save_encoder(tmp_path_factory.mktemp("encoder") / BASE)


@pytest.fixture(scope="module")
def classify_root(tmp_path_factory, encoder_dir) -> Path:
    """root/{own_head,frozen_head,prompted,tagger,mean_head}; root/spare/{v1,v2}: two versions of one adapter."""
    root = tmp_path_factory.mktemp("classify-adapters")
    for name, (config, seed, task) in ADAPTERS.items():
        save_classifier_adapter(encoder_dir, root / name, config, seed=seed, task=task)
    for seed, version in ((5, "v1"), (6, "v2")):
        config = pt.PrefixConfig(num_virtual_tokens=3, seed=seed, init="random", train_head=True)
        save_classifier_adapter(encoder_dir, root / "spare" / version, config, seed=seed)
    return root


def classify_config(root: Path, model_dir: Path, **changes) -> ServeConfig:
    base = ServeConfig.from_flat(
        model=str(model_dir),
        adapters=str(root),
        served_model_name=BASE,
        max_num_seqs=16,
        max_num_batched_tokens=1024,
        adapter_cache_mb=64,
    )
    return base.replace(**changes)


def start(config: ServeConfig, model_dir: Path) -> LiveServer:
    model, tokenizer, trained = load(model_dir)
    return LiveServer(config, app=create_app(model, tokenizer, config, has_trained_head=trained)).start()


@pytest.fixture(scope="module")
def live(classify_root, encoder_dir) -> Iterator[LiveServer]:
    server = start(classify_config(classify_root, encoder_dir), encoder_dir)
    yield server
    server.stop()


def adapter_dir(root: Path, model: str) -> Path | None:
    return None if model == BASE else root / model


def token_ids(text: str, model_dir: Path) -> list[int]:
    return list(load(model_dir)[1](text)["input_ids"])


def post(server: LiveServer, body: dict, key: str | None = None, path: str = "/v1/classify") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server.url + path, json=body, headers=headers, timeout=60)


@pytest.mark.parametrize("model", [BASE, "own_head", "frozen_head", "prompted", "mean_head"])
def test_probs_equal_the_librarys_encoder_forward(live, classify_root, encoder_dir, model) -> None:
    r = post(live, {"model": model, "input": TEXTS[0]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("classify-") and body["object"] == "list" and body["model"] == model
    (item,) = body["data"]
    ids = token_ids(TEXTS[0], encoder_dir)
    expected = reference_probs(encoder_dir, adapter_dir(classify_root, model), ids)
    assert item["index"] == 0 and item["num_classes"] == 3
    assert item["probs"] == pytest.approx(expected, abs=1e-5)
    names = OWN_LABELS if model == "own_head" else LABELS  # the adapter's saved labels, else the model's id2label
    assert item["label"] == names[max(range(3), key=expected.__getitem__)]
    assert body["usage"] == {
        "prompt_tokens": len(ids),
        "total_tokens": len(ids),
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }


def test_a_list_of_inputs_gives_each_its_own_classification(live, classify_root, encoder_dir) -> None:
    r = post(live, {"model": "own_head", "input": TEXTS})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(len(TEXTS)))
    for text, item in zip(TEXTS, data, strict=True):
        expected = reference_probs(encoder_dir, classify_root / "own_head", token_ids(text, encoder_dir))
        assert item["probs"] == pytest.approx(expected, abs=1e-5), text
    assert r.json()["usage"]["prompt_tokens"] == sum(len(token_ids(t, encoder_dir)) for t in TEXTS)


def test_concurrent_requests_of_two_adapters_and_the_base_batch_together_and_equal_each_alone(
    live, classify_root, encoder_dir
) -> None:
    requests = [{"model": m, "input": t} for t in TEXTS for m in ("own_head", "mean_head", "frozen_head", BASE)]
    batcher = live.app.state.engine.batcher
    gate = threading.Event()
    batcher.calls.submit(lambda: gate.wait(30))  # holds the engine thread, so every request queues first
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(post, live, body) for body in requests]
        deadline = time.monotonic() + 30
        while batcher.num_waiting < len(requests) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.num_waiting == len(requests)
        gate.set()
        responses = [f.result() for f in futures]
    for body, r in zip(requests, responses, strict=True):
        assert r.status_code == 200, r.text
        ids = token_ids(body["input"], encoder_dir)
        expected = reference_probs(encoder_dir, adapter_dir(classify_root, body["model"]), ids)
        assert r.json()["data"][0]["probs"] == pytest.approx(expected, abs=1e-5), body
    metrics = httpx.get(live.url + "/metrics").text
    assert live.metric(metrics, "prefixtune_batch_size_max") == len(requests)  # one batch of every row
    assert live.metric(metrics, 'prefixtune_requests_total{endpoint="/v1/classify",status="200"}') >= len(requests)


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({"model": "own_head", "input": ""}, 400, "invalid_request", "input 0 is an empty string"),
        ({"model": "own_head", "input": ["ok", ""]}, 400, "invalid_request", "input 1 is an empty string"),
        ({"model": "own_head", "input": []}, 400, "invalid_request", "empty list"),
        ({"model": "own_head", "input": "z" * 61}, 400, "context_length_exceeded", "taken by this adapter's prefix"),
        ({"model": BASE, "input": "z" * 65}, 400, "context_length_exceeded", "at most 64 positions"),
        ({"model": "own_head", "input": 3}, 400, "invalid_parameter", "input"),
        ({"model": "tagger", "input": "hi"}, 400, "not_a_classifier", "'token_classification', not sequence"),
        ({"model": "nope", "input": "hi"}, 404, "model_not_found", "does not exist"),
    ],
)
def test_bad_inputs_are_clear_errors(live, body, status, code, words) -> None:
    r = post(live, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and words in error["message"], error


def test_completion_routes_on_an_encoder_say_to_use_classify(live) -> None:
    for path, body in (
        ("/v1/completions", {"model": BASE, "prompt": "hi", "max_tokens": 2}),
        ("/v1/chat/completions", {"model": "own_head", "messages": [{"role": "user", "content": "hi"}]}),
    ):
        r = post(live, body, path=path)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "encoder_model" and "use /v1/classify" in r.json()["error"]["message"]


def test_classify_on_a_generative_model_is_a_clear_400(server) -> None:
    r = post(server, {"model": "alpha", "input": "hi"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "not_an_encoder" and "generative" in r.json()["error"]["message"]


def test_tenant_keys_as_for_completions(classify_root, encoder_dir, tmp_path) -> None:
    root = Path(shutil.copytree(classify_root, tmp_path / "adapters"))
    keys = write_keys(tmp_path / "keys.json", {"own_head": ["key-a"], "frozen_head": ["key-b"]})
    server = start(classify_config(root, encoder_dir, api_key=("admin",), adapter_keys=keys), encoder_dir)
    try:
        assert post(server, {"model": "own_head", "input": "hi"}, key="key-a").status_code == 200
        other = post(server, {"model": "frozen_head", "input": "hi"}, key="key-a")
        missing = post(server, {"model": "missing", "input": "hi"}, key="key-a")
        assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"
        assert other.json()["error"]["message"].replace("frozen_head", "missing") == missing.json()["error"]["message"]
        assert post(server, {"model": "own_head", "input": "hi"}).status_code == 401
        assert post(server, {"model": "own_head", "input": "hi"}, key="wrong").status_code == 401
        assert post(server, {"model": "frozen_head", "input": "hi"}, key="admin").status_code == 200
        assert post(server, {"model": BASE, "input": "hi"}, key="key-b").status_code == 200
    finally:
        server.stop()


def test_a_reloaded_adapter_serves_its_new_contents(live, classify_root, encoder_dir) -> None:
    ids = token_ids(TEXTS[1], encoder_dir)
    seen = {}
    for version in ("v1", "v2"):
        loaded = httpx.post(live.url + "/v1/adapters", json={"name": "live", "path": f"spare/{version}"}, timeout=60)
        assert loaded.status_code == 201, loaded.text
        r = post(live, {"model": "live", "input": TEXTS[1]})
        assert r.status_code == 200, r.text
        seen[version] = r.json()["data"][0]["probs"]
        assert seen[version] == pytest.approx(reference_probs(encoder_dir, classify_root / "spare" / version, ids))
        assert httpx.delete(live.url + "/v1/adapters/live", timeout=60).status_code == 200
    assert seen["v1"] != pytest.approx(seen["v2"], abs=1e-3)
    assert post(live, {"model": "live", "input": "hi"}).status_code == 404


def test_a_bare_encoder_serves_adapters_with_their_own_head_only(tmp_path) -> None:
    model_dir = save_encoder(tmp_path / BASE, head="base")
    config = pt.PrefixConfig(num_virtual_tokens=2, seed=7, init="random", train_head=True)
    save_classifier_adapter(model_dir, tmp_path / "adapters" / "own", config, seed=7)
    server = start(classify_config(tmp_path / "adapters", model_dir), model_dir)
    try:
        bare = post(server, {"model": BASE, "input": "hi"})
        assert bare.status_code == 400 and bare.json()["error"]["code"] == "not_a_classifier"
        assert "no trained classification head" in bare.json()["error"]["message"]
        r = post(server, {"model": "own", "input": "hi"})
        assert r.status_code == 200, r.text
        expected = reference_probs(model_dir, tmp_path / "adapters" / "own", token_ids("hi", model_dir))
        assert r.json()["data"][0]["probs"] == pytest.approx(expected, abs=1e-5)
    finally:
        server.stop()


def test_the_vllm_engine_does_not_serve_encoders(encoder_dir, monkeypatch) -> None:
    model, tokenizer, _ = load(encoder_dir)
    config = classify_config(encoder_dir.parent, encoder_dir, engine="vllm")
    with pytest.raises(ConfigError, match="--engine vllm does not serve encoders"):
        create_app(model, tokenizer, config)

    def refuse(*args, **kwargs):
        raise AssertionError("loaded a model")

    monkeypatch.setattr(server_module, "load_served_encoder", refuse)  # `prefixtune serve` refuses before loading
    with pytest.raises(ConfigError, match="--engine vllm does not serve encoders"):
        server_module.serve(config)


def test_an_encoder_without_a_sequence_head_is_refused(encoder_dir) -> None:
    bare = make_encoder("bert", "base")
    config = classify_config(encoder_dir.parent, encoder_dir)
    with pytest.raises(ConfigError, match="has no sequence-classification head"):
        create_app(bare, load(encoder_dir)[1], config)


def test_roberta_inputs_may_use_every_position_after_its_offset() -> None:
    """RoBERTa numbers real tokens from padding_idx + 1 = 2, so 64 positions hold 62 tokens; 63 is a 400, not a
    failed batch (an index past the position table would fail every row batched with it)."""
    model = make_encoder("roberta", "seq")
    tokenizer = make_tokenizer()
    tokenizer.padding_side = "right"
    with TestClient(create_app(model, tokenizer, ServeConfig.from_flat(model="roberta"))) as client:
        assert client.post("/v1/classify", json={"model": "roberta", "input": "z" * 62}).status_code == 200
        r = client.post("/v1/classify", json={"model": "roberta", "input": "z" * 63})
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_a_timed_out_request_is_a_504_and_its_rows_never_run(classify_root, encoder_dir, tmp_path) -> None:
    root = Path(shutil.copytree(classify_root, tmp_path / "adapters"))
    server = start(classify_config(root, encoder_dir, request_timeout_s=0.5), encoder_dir)
    try:
        assert httpx.get(server.url + "/health").status_code == 200
        batcher = server.app.state.engine.batcher
        gate = threading.Event()
        batcher.calls.submit(lambda: gate.wait(30))  # the engine thread is busy past the timeout
        r = post(server, {"model": "own_head", "input": ["a", "b"]})
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        gate.set()
        deadline = time.monotonic() + 10
        while batcher.has_work and time.monotonic() < deadline:
            time.sleep(0.01)
        metrics = httpx.get(server.url + "/metrics").text
        assert server.metric(metrics, "prefixtune_batch_size_count") == 0  # the cancelled rows were dropped
        assert post(server, {"model": "own_head", "input": "a"}).status_code == 200
    finally:
        server.stop()
