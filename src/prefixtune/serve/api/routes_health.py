"""GET /health (200 while serving, 503 while draining) and GET /metrics (Prometheus; an admin key with
--metrics-require-key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from prefixtune.serve.api.deps import EngineDep, MetricsAccessDep, MetricsDep
from prefixtune.serve.api.protocol import HealthResponse

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse)
async def health(engine: EngineDep) -> JSONResponse:
    stats = engine.stats()
    body = HealthResponse(
        status="ok" if stats.is_accepting else "draining",
        model=engine.model_name,
        running=stats.num_running,
        waiting=stats.num_waiting,
        free_slots=stats.num_free_slots,
    )
    return JSONResponse(body.model_dump(), status_code=200 if stats.is_accepting else 503)


@router.get("/metrics")
async def metrics(metrics: MetricsDep, access: MetricsAccessDep) -> Response:
    return Response(metrics.render(), media_type=metrics.content_type)
