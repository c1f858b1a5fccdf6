"""Routes against a fake `Engine` (FastAPI TestClient inside `with`): the HTTP layer alone, no torch."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from prefixtune.errors import AdapterNotFoundError, EngineBusyError
from prefixtune.serve.api.app import build_app
from prefixtune.serve.api.deps import ApiSettings
from prefixtune.serve.engine.messages import (
    AdapterInfo,
    ChatTurn,
    EngineStats,
    GenerationOutput,
    GenerationRequest,
)
from prefixtune.serve.errors import EngineShutdownError
from prefixtune.serve.metrics import ServeMetrics
from prefixtune.serve.registry_state import hash_key

API_DIR = Path(__file__).parents[2] / "src" / "prefixtune" / "serve" / "api"


class FakeStream:
    def __init__(self, request: GenerationRequest, finish: str) -> None:
        self.request, self.finish, self.cancelled = request, finish, False

    async def _outputs(self) -> AsyncIterator[GenerationOutput]:
        n = len(self.request.prompt_token_ids)
        for i, word in enumerate(("he", "llo")):
            last = i == 1
            yield GenerationOutput(self.request.request_id, word, (i,), self.finish if last else None, n, i + 1)

    def __aiter__(self) -> AsyncIterator[GenerationOutput]:
        return self._outputs()

    async def cancel(self) -> None:
        self.cancelled = True


class FakeEngine:
    model_name = "base"
    max_model_len = 64

    def __init__(self) -> None:
        self.accepting, self.error, self.finish = True, None, "stop"
        self.submitted: list[GenerationRequest] = []
        self.adapters = {"a": AdapterInfo("a", "/r/a", "kv", 4, 0)}

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(t) for t in token_ids)

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        return [chr(t) for t in token_ids]

    def render_chat(self, turns: Sequence[ChatTurn]) -> str:
        return "".join(f"{t.role}:{t.content}\n" for t in turns)

    async def submit(self, request: GenerationRequest) -> FakeStream:
        if self.error is not None:
            raise self.error
        self.submitted.append(request)
        return FakeStream(request, self.finish)

    def list_adapters(self) -> list[AdapterInfo]:
        return list(self.adapters.values())

    def get_adapter(self, name: str) -> AdapterInfo:
        if name not in self.adapters:
            raise AdapterNotFoundError(f"no adapter {name!r}")
        return self.adapters[name]

    async def load_adapter(self, name: str, path: str, api_keys: Sequence[str] = ()) -> AdapterInfo:
        self.adapters[name] = AdapterInfo(name, path, "kv", 2, 0, frozenset(hash_key(k) for k in api_keys))
        return self.adapters[name]

    async def unload_adapter(self, name: str) -> None:
        self.get_adapter(name)
        del self.adapters[name]

    def stats(self) -> EngineStats:
        return EngineStats(0, 0, 4, self.accepting)

    async def start(self) -> None:
        self.started = True

    async def shutdown(self, drain_timeout: float = 30.0) -> None:
        self.accepting = False


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def client(engine):
    with TestClient(build_app(engine, ApiSettings(), ServeMetrics())) as c:
        yield c


def test_completion_converts_the_request_at_the_edge(client, engine):
    body = {"model": "a", "prompt": "hi", "max_tokens": 5, "temperature": 0, "stop": "x", "seed": 3, "foo": 1}
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"] == "hello"
    (request,) = engine.submitted
    assert request.adapter_name == "a" and request.prompt_token_ids == (104, 105)
    assert request.sampling.stop == ("x",) and request.sampling.seed == 3 and request.sampling.max_tokens == 5


def test_choices_prompts_and_logprobs_convert_at_the_edge(client, engine):
    body = {"model": "a", "prompt": ["hi", "yo"], "n": 2, "seed": 5, "logprobs": 3, "echo": True}
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    choices = response.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]  # prompt index * n + j
    assert [c["text"] for c in choices] == ["hihello", "hihello", "yohello", "yohello"]  # echo: prompt first
    submitted = [(r.prompt_token_ids, r.sampling.seed) for r in engine.submitted]
    assert submitted == [((104, 105), 5), ((104, 105), 6), ((121, 111), 5), ((121, 111), 6)]  # seed + j
    assert {(r.sampling.logprobs, r.sampling.prompt_logprobs) for r in engine.submitted} == {(3, 3)}
    assert len({r.request_id for r in engine.submitted}) == 4
    assert response.json()["usage"] == {"prompt_tokens": 4, "completion_tokens": 8, "total_tokens": 12}


def test_chat_logprobs_convert_at_the_edge(client, engine):
    chat = {"model": "base", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", json=chat | {"logprobs": True, "top_logprobs": 2}).status_code == 200
    assert client.post("/v1/chat/completions", json=chat).status_code == 200
    assert [(r.sampling.logprobs, r.sampling.prompt_logprobs) for r in engine.submitted] == [(2, None), (None, None)]
    refused = client.post("/v1/chat/completions", json=chat | {"top_logprobs": 2})
    assert refused.status_code == 400 and "logprobs=true" in refused.json()["error"]["message"]
    too_many = client.post("/v1/chat/completions", json=chat | {"logprobs": True, "top_logprobs": 21})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "top_logprobs"


def test_chat_stream_is_openai_sse(client):
    body = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = client.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert '"role":"assistant"' in events[0] and '"finish_reason":"stop"' in events[-2]


def test_busy_shutdown_and_abort_statuses(client, engine):
    body = {"model": "base", "prompt": "hi"}
    engine.error = EngineBusyError("full")
    busy = client.post("/v1/completions", json=body)
    assert busy.status_code == 429 and busy.headers["Retry-After"] and busy.json()["error"]["code"] == "queue_full"
    engine.error = EngineShutdownError("draining")
    down = client.post("/v1/completions", json=body)
    assert down.status_code == 503 and down.headers["Retry-After"]
    engine.error, engine.finish = None, "abort"
    aborted = client.post("/v1/completions", json=body)
    assert aborted.status_code == 503 and aborted.json()["error"]["code"] == "engine_error"
    streamed = client.post("/v1/completions", json=body | {"stream": True})
    assert '"code":"engine_error"' in streamed.text


def test_health_reports_draining_as_503(client, engine):
    assert client.get("/health").status_code == 200
    engine.accepting = False
    assert client.get("/health").json()["status"] == "draining"
    assert client.get("/health").status_code == 503


def test_metrics_endpoint_is_prometheus(client):
    client.post("/v1/completions", json={"model": "base", "prompt": "hi"})
    text = client.get("/metrics").text
    assert 'prefixtune_requests_total{endpoint="/v1/completions",status="200"} 1.0' in text
    assert "prefixtune_adapter_cache_hits_total" in text


def test_unexpected_errors_are_counted_as_500_not_499(engine):
    engine.error = RuntimeError("a bug")
    with TestClient(build_app(engine, ApiSettings(), ServeMetrics()), raise_server_exceptions=False) as client:
        failed = client.post("/v1/completions", json={"model": "base", "prompt": "hi"})
        assert failed.status_code == 500 and failed.json()["error"]["code"] == "internal_error"
        text = client.get("/metrics").text
    assert 'prefixtune_requests_total{endpoint="/v1/completions",status="500"} 1.0' in text
    assert 'status="499"' not in text


def test_api_package_never_imports_torch_or_the_engine_internals():
    allowed_engine = {"prefixtune.serve.engine.messages", "prefixtune.serve.engine.protocol"}
    for file in API_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("torch", "transformers")), (file.name, name)
                if name.startswith("prefixtune.serve.engine"):
                    assert name in allowed_engine, (file.name, name)
