"""POST /v1/classify (thin: body in, one service call, response out; vLLM's classification API shape)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from prefixtune.serve.api.deps import AccessDep, EngineDep, SettingsDep
from prefixtune.serve.api.protocol_classify import ClassificationRequest, ClassificationResponse
from prefixtune.serve.api.serving_classify import create_classification

router = APIRouter(prefix="/v1", tags=["classify"])


@router.post("/classify")
async def classify(
    body: ClassificationRequest, request: Request, engine: EngineDep, access: AccessDep, settings: SettingsDep
) -> ClassificationResponse:
    return await create_classification(body, engine, access, settings, request)
