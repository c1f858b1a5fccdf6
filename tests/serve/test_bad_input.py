"""Bad input is a 4xx in the OpenAI shape, never a 500 (issue 10, items 4 and 8): lone surrogates, NUL bytes,
names with newlines, oversized chunked bodies, non-UTF-8 bodies, requests that can never be queued; plus a
hypothesis fuzz over the request models against the real app on a tiny model."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefixtune.serve.server import create_app
from tests.serve.conftest import BASE, LiveServer, serve_config, served_model
from tests.train.conftest import make_tokenizer

ADMIN = "admin-key"
SURROGATE = "\ud800"


def raw_post(live: LiveServer, path: str, body: object, key: str | None = ADMIN) -> httpx.Response:
    """POST `body` as JSON with \\u escapes (json.dumps), so lone surrogates travel as a client can send them."""
    headers = {"content-type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    return httpx.post(live.url + path, content=json.dumps(body).encode(), headers=headers, timeout=60)


def assert_4xx(response: httpx.Response, status: int = 400, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] and error["code"], error
    if code is not None:
        assert error["code"] == code, error
    return error


@pytest.fixture(scope="module")
def live(adapter_root, tmp_path_factory):
    root = shutil.copytree(adapter_root, tmp_path_factory.mktemp("bad-input") / "adapters")
    config = serve_config(root, api_key=(ADMIN,), max_request_bytes=4096, max_waiting=4, metrics_require_key=True)
    server = LiveServer(config).start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"model": BASE, "prompt": "a" + SURROGATE}),
        ("/v1/completions", {"model": BASE, "prompt": ["ok", SURROGATE]}),
        ("/v1/completions", {"model": BASE, "prompt": "hi", "stop": [SURROGATE]}),
        ("/v1/completions", {"model": SURROGATE, "prompt": "hi"}),
        ("/v1/completions", {"model": BASE, "prompt": "hi", SURROGATE: 1}),
        ("/v1/chat/completions", {"model": BASE, "messages": [{"role": "user", "content": SURROGATE}]}),
        (
            "/v1/chat/completions",
            {"model": BASE, "messages": [{"role": "user", "content": [{"type": "text", "text": SURROGATE}]}]},
        ),
        ("/v1/adapters", {"name": "x", "path": "spare/delta\x00"}),
        ("/v1/adapters", {"name": "x\x00", "path": "spare/delta"}),
        ("/v1/adapters", {"name": "x", "path": SURROGATE}),
        ("/v1/adapters", {"name": "x", "path": "spare/delta", "api_keys": [SURROGATE]}),
    ],
)
def test_surrogates_and_nul_bytes_are_400(live, path, body):
    assert_4xx(raw_post(live, path, body))


def test_an_adapter_name_with_a_trailing_newline_is_refused(live):
    assert_4xx(raw_post(live, "/v1/adapters", {"name": "delta\n", "path": "spare/delta"}), code="invalid_adapter_name")


def test_oversized_chunked_and_non_utf8_bodies(live):
    def chunks():
        for _ in range(10):
            yield b" " * 1000

    headers = {"content-type": "application/json", "Authorization": f"Bearer {ADMIN}"}
    chunked = httpx.post(live.url + "/v1/completions", content=chunks(), headers=headers, timeout=60)
    assert "content-length" not in chunked.request.headers
    assert_4xx(chunked, 413, "request_too_large")
    assert_4xx(httpx.post(live.url + "/v1/completions", content=b'{"model": "\xff\xfe"}', headers=headers), 400)


def test_more_sequences_than_the_queue_ever_holds_is_400_not_429(live):
    body = {"model": BASE, "prompt": ["a", "b", "c"], "n": 2, "max_tokens": 1}  # 6 sequences > --max-waiting 4
    error = assert_4xx(raw_post(live, "/v1/completions", body), 400, "invalid_request")
    assert "--max-waiting" in error["message"]
    assert raw_post(live, "/v1/completions", body | {"n": 1}).status_code == 200  # 3 fit


def test_metrics_can_require_an_admin_key(live):
    assert_4xx(httpx.get(live.url + "/metrics"), 401)
    assert_4xx(httpx.get(live.url + "/metrics", headers={"Authorization": "Bearer tenant"}), 403)
    assert httpx.get(live.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200


# ----- fuzz over the request models --------------------------------------------------------------------
# Ordinary text with lone surrogates, NUL and newlines mixed in often (st.text would drop the surrogates).
TEXT = st.lists(st.one_of(st.characters(), st.sampled_from([SURROGATE, "\udfff", "\x00", "\n"])), max_size=12).map(
    "".join
)
WILD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.lists(TEXT, max_size=3),
    st.lists(st.integers(-5, 2**40), max_size=4),
    st.dictionaries(TEXT, TEXT, max_size=2),
)
SAMPLING = {
    "model": st.sampled_from([BASE, "alpha", "beta", "nobody"]),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0.1, 1),
    "top_k": st.integers(-1, 100),
    "n": st.integers(1, 3),
    "stop": st.one_of(TEXT, st.lists(TEXT, max_size=4)),
    "seed": st.integers(0, 2**62),
    "stream": st.booleans(),
    "ignore_eos": st.booleans(),
}
TOKENS = st.lists(st.integers(0, 300), max_size=5)
COMPLETION = st.fixed_dictionaries(
    {
        "model": SAMPLING["model"],
        "prompt": st.one_of(
            TEXT, st.lists(TEXT, min_size=1, max_size=3), TOKENS, st.lists(TOKENS, min_size=1, max_size=2)
        ),
        "max_tokens": st.integers(1, 3),
    },
    optional={k: v for k, v in SAMPLING.items() if k != "model"}
    | {"logprobs": st.integers(0, 3), "echo": st.booleans()},
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"])},
    optional={"content": st.one_of(TEXT, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT})))},
)
CHAT = st.fixed_dictionaries(
    {
        "model": SAMPLING["model"],
        "messages": st.lists(MESSAGE, min_size=1, max_size=2),
        "max_tokens": st.integers(1, 3),
    },
    optional={k: v for k, v in SAMPLING.items() if k != "model"}
    | {"logprobs": st.booleans(), "top_logprobs": st.integers(0, 3)},
)
LOAD = st.fixed_dictionaries(
    {
        "name": st.one_of(st.sampled_from(["new", "alpha", BASE, "a\n"]), TEXT),
        "path": st.one_of(TEXT, st.just("spare/delta")),
    },
    optional={"api_keys": st.lists(TEXT, max_size=2)},
)


def with_one_wild_field(valid: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    """Mostly well-formed bodies (so they reach the tokenizer, engine and registry), each with at most one field
    replaced by an arbitrary JSON value or an unknown field added."""

    @st.composite
    def build(draw: st.DrawFn) -> dict:
        body = dict(draw(valid))
        if draw(st.booleans()):
            body[draw(st.one_of(st.sampled_from(sorted(body) or ["model"]), TEXT))] = draw(WILD)
        return body

    return build()


@pytest.fixture(scope="module")
def fuzz_client(adapter_root, tmp_path_factory):
    root = shutil.copytree(adapter_root, tmp_path_factory.mktemp("fuzz") / "adapters")
    app = create_app(served_model(), make_tokenizer(), serve_config(root, max_model_len=64, max_request_bytes=4096))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _no_5xx(client: TestClient, path: str, body: object) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        assert response.json()["error"]["code"], response.text
    assert "internal_error" not in response.text, (body, response.text)  # nor inside a stream


# Derandomized: every CI run tries the same 200 bodies (a random search would fail some unrelated later run);
# raise max_examples or drop derandomize locally to search further.
FUZZ = settings(
    max_examples=200, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@FUZZ
@given(body=st.one_of(with_one_wild_field(COMPLETION), WILD, st.binary(max_size=40)))
def test_fuzz_completions_never_5xx(fuzz_client, body):
    _no_5xx(fuzz_client, "/v1/completions", body)


@FUZZ
@given(body=with_one_wild_field(CHAT))
def test_fuzz_chat_never_5xx(fuzz_client, body):
    _no_5xx(fuzz_client, "/v1/chat/completions", body)


@FUZZ
@given(body=with_one_wild_field(LOAD))
def test_fuzz_adapter_loads_never_5xx(fuzz_client, body):
    _no_5xx(fuzz_client, "/v1/adapters", body)
