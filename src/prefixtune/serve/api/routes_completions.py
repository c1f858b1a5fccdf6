"""POST /v1/completions and POST /v1/chat/completions (thin: body in, one service call, response out)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from prefixtune.serve.api.deps import AccessDep, EngineDep, SettingsDep
from prefixtune.serve.api.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
)
from prefixtune.serve.api.serving_completions import create_chat_completion, create_completion

router = APIRouter(prefix="/v1", tags=["completions"])


@router.post("/completions", response_model=None)
async def completions(
    body: CompletionRequest, request: Request, engine: EngineDep, access: AccessDep, settings: SettingsDep
) -> CompletionResponse | StreamingResponse:
    return await create_completion(body, engine, access, settings, request)


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, engine: EngineDep, access: AccessDep, settings: SettingsDep
) -> ChatCompletionResponse | StreamingResponse:
    return await create_chat_completion(body, engine, access, settings, request)
