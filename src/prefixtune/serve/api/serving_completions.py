"""The logic behind POST /v1/completions and POST /v1/chat/completions (routes stay thin).

Both: resolve the adapter from `model` (with access rules), tokenize, submit one engine sequence per choice
(n per prompt; with a seed, choice j of a prompt uses seed + j), then collect or stream, and shape the result
as OpenAI does. Choice index = prompt index * n + j. Usage counts each prompt's tokens once and sums the
choices' completion tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import StreamingResponse

from prefixtune.serve.api.deps import Access, ApiSettings
from prefixtune.serve.api.logprobs import Position, chat_logprobs, completion_logprobs
from prefixtune.serve.api.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatResponseMessage,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DeltaMessage,
    UsageInfo,
    new_id,
)
from prefixtune.serve.api.serving import ChoiceStreams, collect, sse_response, submit_all
from prefixtune.serve.engine.messages import ChatTurn, GenerationOutput, GenerationRequest
from prefixtune.serve.engine.protocol import Engine
from prefixtune.serve.errors import InvalidRequestError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prompt:
    """One prompt of a request: its text (what echo returns) and its token ids."""

    text: str
    token_ids: list[int]


def _usage(prompts: Sequence[Prompt], finals: Sequence[GenerationOutput]) -> UsageInfo:
    prompt_tokens = sum(len(p.token_ids) for p in prompts)
    completion_tokens = sum(out.num_generated_tokens for out in finals)
    return UsageInfo(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )


def _log_extra(body: CompletionRequest | ChatCompletionRequest) -> None:
    if body.model_extra:
        logger.debug("ignoring unknown request fields %s", sorted(body.model_extra))


def _check_n(body: CompletionRequest | ChatCompletionRequest, settings: ApiSettings, num_prompts: int = 1) -> None:
    if body.n > settings.max_n:
        raise InvalidRequestError(
            f"n={body.n} is above this server's limit of {settings.max_n} choices per prompt (--max-n); "
            "ask for fewer choices, or send several requests"
        )
    sequences = body.n * num_prompts
    if settings.max_waiting is not None and sequences > settings.max_waiting:  # could never be queued: not a 429
        raise InvalidRequestError(
            f"the request needs {sequences} sequences (n={body.n} x {num_prompts} prompts), more than this "
            f"server ever queues at once ({settings.max_waiting}, --max-waiting); send fewer prompts or choices "
            "per request"
        )


async def _submit(
    engine: Engine,
    adapter: str | None,
    body: CompletionRequest | ChatCompletionRequest,
    prompts: Sequence[Prompt],
    max_tokens: int,
    request_id: str,
) -> ChoiceStreams:
    """One engine sequence per choice, in choice order (prompt index * n + j), all queued or none."""
    requests = [
        GenerationRequest(
            f"{request_id}-{p * body.n + j}", tuple(prompt.token_ids), body.to_sampling(max_tokens, j), adapter
        )
        for p, prompt in enumerate(prompts)
        for j in range(body.n)
    ]
    return await submit_all(engine, requests)


class CompletionChoiceBuilder:
    """Shapes one choice of a completion from its engine outputs: all of them at once (the whole response) or
    one output per streamed chunk. The one place completion choices are built, so the chunks of a stream
    concatenate to the whole response: text, logprobs and text offsets alike.

    Echo (the prompt's text, and its logprobs when asked) goes in front of the first call's output only.

    Args:
        index: the choice index.
        prompt: the choice's prompt.
        body: the request (echo, logprobs).
        engine: for the token strings of logprobs.
    """

    def __init__(self, index: int, prompt: Prompt, body: CompletionRequest, engine: Engine) -> None:
        self.index, self.prompt, self.engine = index, prompt, engine
        self.has_logprobs = body.logprobs is not None
        self.echo_pending = body.echo
        self.offset = 0  # text_offset of the next token

    def build(self, outputs: Sequence[GenerationOutput]) -> CompletionChoice | None:
        """The choice for these outputs (those after the ones built before), or None if they add nothing."""
        echo, self.echo_pending = self.echo_pending, False
        text = (self.prompt.text if echo else "") + "".join(out.text for out in outputs)
        positions: list[Position] = []
        if echo and outputs[0].prompt_logprobs is not None:
            positions += zip(self.prompt.token_ids, outputs[0].prompt_logprobs, strict=True)
        positions += [(e.token_id, e) for out in outputs for e in out.logprobs or ()]
        finish = outputs[-1].finish_reason
        if not (text or positions or finish):
            return None
        logprobs = None
        if self.has_logprobs:
            logprobs, self.offset = completion_logprobs(positions, self.engine.token_strings, self.offset)
        return CompletionChoice(index=self.index, text=text, logprobs=logprobs, finish_reason=finish)


def _completion_prompts(engine: Engine, body: CompletionRequest) -> list[Prompt]:
    prompts = []
    for prompt in body.prompts():
        if isinstance(prompt, str):
            prompts.append(Prompt(prompt, engine.encode(prompt)))
        else:  # token ids: echo returns their text, decoded as completions are
            prompts.append(Prompt(engine.decode(prompt) if body.echo else "", list(prompt)))
    return prompts


async def create_completion(
    body: CompletionRequest, engine: Engine, access: Access, settings: ApiSettings, request: Request
) -> CompletionResponse | StreamingResponse:
    """POST /v1/completions."""
    _log_extra(body)
    _check_n(body, settings, len(body.prompts()))
    adapter = access.adapter_for(engine, body.model)  # 404/401 before any work
    prompts = _completion_prompts(engine, body)
    request_id = new_id("cmpl")
    streams = await _submit(engine, adapter, body, prompts, body.max_tokens or 16, request_id)
    choices = [CompletionChoiceBuilder(i, prompts[i // body.n], body, engine) for i in range(len(streams))]

    def response(choices: list[CompletionChoice], usage: UsageInfo | None = None) -> CompletionResponse:
        return CompletionResponse(id=request_id, model=body.model, choices=choices, usage=usage)

    if body.stream:

        def chunks(index: int, out: GenerationOutput) -> list[dict]:
            choice = choices[index].build([out])
            return [] if choice is None else [response([choice]).model_dump()]

        def usage(finals: list[GenerationOutput]) -> list[dict]:
            return [response([], _usage(prompts, finals)).model_dump()] if body.include_usage else []

        return sse_response(
            streams, chunks, last_chunks=usage, timeout_s=settings.request_timeout_s, keepalive_s=settings.keepalive_s
        )
    outputs = await collect(streams, request, settings.request_timeout_s)
    built = [builder.build(outs) for builder, outs in zip(choices, outputs, strict=True)]
    return response([c for c in built if c is not None], _usage(prompts, [outs[-1] for outs in outputs]))


def _chat_prompt(engine: Engine, body: ChatCompletionRequest) -> Prompt:
    try:
        turns = [ChatTurn(m.role, m.text()) for m in body.messages]
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from exc
    text = engine.render_chat(turns)
    return Prompt(text, engine.encode(text))


def _chat_max_tokens(engine: Engine, body: ChatCompletionRequest, settings: ApiSettings, n_prompt: int) -> int:
    explicit = body.max_completion_tokens or body.max_tokens
    if explicit is not None:
        return explicit
    m = 0 if body.model == engine.model_name else engine.get_adapter(body.model).num_virtual_tokens
    return max(1, min(settings.default_max_tokens, engine.max_model_len - n_prompt - m))


class ChatChoiceBuilder:
    """Shapes one chat choice from its engine outputs: whole (`choice`) or one output at a time (`deltas`),
    both from `content`, so the deltas of a stream concatenate to the whole message and its logprobs."""

    def __init__(self, index: int, body: ChatCompletionRequest, engine: Engine) -> None:
        self.index, self.has_logprobs, self.engine = index, bool(body.logprobs), engine

    def content(self, outputs: Sequence[GenerationOutput]) -> tuple[str, ChatLogprobs | None]:
        text = "".join(out.text for out in outputs)
        if not self.has_logprobs:
            return text, None
        return text, chat_logprobs([e for out in outputs for e in out.logprobs or ()], self.engine.token_strings)

    def choice(self, outputs: Sequence[GenerationOutput]) -> ChatChoice:
        text, logprobs = self.content(outputs)
        message = ChatResponseMessage(content=text)
        return ChatChoice(index=self.index, message=message, logprobs=logprobs, finish_reason=outputs[-1].finish_reason)

    def deltas(self, out: GenerationOutput) -> list[ChatChunkChoice]:
        """The chunk choices of one output: its text and logprobs (also a token whose text is held back), then
        the finish reason in a chunk of its own."""
        text, logprobs = self.content([out])
        deltas = []
        if text or out.logprobs:
            deltas.append(ChatChunkChoice(index=self.index, delta=DeltaMessage(content=text), logprobs=logprobs))
        if out.finish_reason is not None:
            deltas.append(ChatChunkChoice(index=self.index, delta=DeltaMessage(), finish_reason=out.finish_reason))
        return deltas


async def create_chat_completion(
    body: ChatCompletionRequest, engine: Engine, access: Access, settings: ApiSettings, request: Request
) -> ChatCompletionResponse | StreamingResponse:
    """POST /v1/chat/completions."""
    _log_extra(body)
    _check_n(body, settings)
    adapter = access.adapter_for(engine, body.model)  # 404/401 before any work
    prompt = _chat_prompt(engine, body)
    request_id = new_id("chatcmpl")
    max_tokens = _chat_max_tokens(engine, body, settings, len(prompt.token_ids))
    streams = await _submit(engine, adapter, body, [prompt], max_tokens, request_id)
    choices = [ChatChoiceBuilder(i, body, engine) for i in range(len(streams))]
    if body.stream:

        def chunk(choices: list[ChatChunkChoice], usage: UsageInfo | None = None) -> dict:
            return ChatCompletionChunk(id=request_id, model=body.model, choices=choices, usage=usage).model_dump()

        def chunks(index: int, out: GenerationOutput) -> list[dict]:
            return [chunk([delta]) for delta in choices[index].deltas(out)]

        def usage(finals: list[GenerationOutput]) -> list[dict]:
            return [chunk([], _usage([prompt], finals))] if body.include_usage else []

        role = DeltaMessage(role="assistant", content="")
        return sse_response(
            streams,
            chunks,
            first_chunks=[chunk([ChatChunkChoice(index=i, delta=role)]) for i in range(len(streams))],
            last_chunks=usage,
            timeout_s=settings.request_timeout_s,
            keepalive_s=settings.keepalive_s,
        )
    outputs = await collect(streams, request, settings.request_timeout_s)
    return ChatCompletionResponse(
        id=request_id,
        model=body.model,
        choices=[builder.choice(outs) for builder, outs in zip(choices, outputs, strict=True)],
        usage=_usage([prompt], [outs[-1] for outs in outputs]),
    )
