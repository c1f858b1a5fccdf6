"""The logic behind POST /v1/completions and POST /v1/chat/completions (routes stay thin).

Both: resolve the adapter from `model` (with access rules), tokenize, submit, then collect or stream, and
shape the result as OpenAI does.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import StreamingResponse

from prefixtune.serve.api.deps import Access, ApiSettings
from prefixtune.serve.api.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatResponseMessage,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DeltaMessage,
    UsageInfo,
    new_id,
)
from prefixtune.serve.api.serving import collect, sse_response
from prefixtune.serve.engine.messages import ChatTurn, GenerationOutput, GenerationRequest
from prefixtune.serve.engine.protocol import Engine, OutputStream
from prefixtune.serve.errors import InvalidRequestError

logger = logging.getLogger(__name__)


def _usage(prompt_tokens: int, completion_tokens: int) -> UsageInfo:
    return UsageInfo(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )


def _log_extra(body: CompletionRequest | ChatCompletionRequest) -> None:
    if body.model_extra:
        logger.debug("ignoring unknown request fields %s", sorted(body.model_extra))


async def _submit(
    engine: Engine,
    access: Access,
    body: CompletionRequest | ChatCompletionRequest,
    prompt: list[int],
    max_tokens: int,
    request_id: str,
) -> OutputStream:
    adapter = access.adapter_for(engine, body.model)
    sampling = body.to_sampling(max_tokens)
    return await engine.submit(GenerationRequest(request_id, tuple(prompt), sampling, adapter))


async def create_completion(
    body: CompletionRequest, engine: Engine, access: Access, settings: ApiSettings, request: Request
) -> CompletionResponse | StreamingResponse:
    """POST /v1/completions."""
    _log_extra(body)
    prompt = engine.encode(body.prompt) if isinstance(body.prompt, str) else list(body.prompt)
    request_id = new_id("cmpl")
    stream = await _submit(engine, access, body, prompt, body.max_tokens or 16, request_id)
    if body.stream:

        def chunks(out: GenerationOutput) -> list[dict]:
            if not out.text and out.finish_reason is None:
                return []
            choice = CompletionChoice(text=out.text, finish_reason=out.finish_reason)
            return [CompletionResponse(id=request_id, model=body.model, choices=[choice]).model_dump()]

        def usage(out: GenerationOutput) -> dict:
            return CompletionResponse(
                id=request_id,
                model=body.model,
                choices=[],
                usage=_usage(out.num_prompt_tokens, out.num_generated_tokens),
            ).model_dump()

        return sse_response(
            stream,
            chunks,
            usage_chunk=usage if body.include_usage else None,
            timeout_s=settings.request_timeout_s,
            keepalive_s=settings.keepalive_s,
        )
    done = await collect(stream, request, settings.request_timeout_s)
    usage = _usage(done.prompt_tokens, done.completion_tokens)
    choice = CompletionChoice(text=done.text, finish_reason=done.finish_reason)
    return CompletionResponse(id=request_id, model=body.model, choices=[choice], usage=usage)


def _chat_prompt(engine: Engine, body: ChatCompletionRequest) -> list[int]:
    try:
        turns = [ChatTurn(m.role, m.text()) for m in body.messages]
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from exc
    return engine.encode(engine.render_chat(turns))


def _chat_max_tokens(engine: Engine, body: ChatCompletionRequest, settings: ApiSettings, n_prompt: int) -> int:
    explicit = body.max_completion_tokens or body.max_tokens
    if explicit is not None:
        return explicit
    m = 0 if body.model == engine.model_name else engine.get_adapter(body.model).num_virtual_tokens
    return max(1, min(settings.default_max_tokens, engine.max_model_len - n_prompt - m))


async def create_chat_completion(
    body: ChatCompletionRequest, engine: Engine, access: Access, settings: ApiSettings, request: Request
) -> ChatCompletionResponse | StreamingResponse:
    """POST /v1/chat/completions."""
    _log_extra(body)
    access.adapter_for(engine, body.model)  # 404/401/403 before any work
    prompt = _chat_prompt(engine, body)
    request_id = new_id("chatcmpl")
    max_tokens = _chat_max_tokens(engine, body, settings, len(prompt))
    stream = await _submit(engine, access, body, prompt, max_tokens, request_id)
    if body.stream:

        def chunk(delta: DeltaMessage, finish: str | None = None) -> dict:
            choice = ChatChunkChoice(delta=delta, finish_reason=finish)
            return ChatCompletionChunk(id=request_id, model=body.model, choices=[choice]).model_dump()

        def chunks(out: GenerationOutput) -> list[dict]:
            out_chunks = [chunk(DeltaMessage(content=out.text))] if out.text else []
            if out.finish_reason is not None:
                out_chunks.append(chunk(DeltaMessage(), out.finish_reason))
            return out_chunks

        def usage(out: GenerationOutput) -> dict:
            return ChatCompletionChunk(
                id=request_id,
                model=body.model,
                choices=[],
                usage=_usage(out.num_prompt_tokens, out.num_generated_tokens),
            ).model_dump()

        return sse_response(
            stream,
            chunks,
            first_chunks=[chunk(DeltaMessage(role="assistant", content=""))],
            usage_chunk=usage if body.include_usage else None,
            timeout_s=settings.request_timeout_s,
            keepalive_s=settings.keepalive_s,
        )
    done = await collect(stream, request, settings.request_timeout_s)
    usage = _usage(done.prompt_tokens, done.completion_tokens)
    choice = ChatChoice(message=ChatResponseMessage(content=done.text), finish_reason=done.finish_reason)
    return ChatCompletionResponse(id=request_id, model=body.model, choices=[choice], usage=usage)
