"""GET /v1/models, POST /v1/adapters, DELETE /v1/adapters/{name}."""

from __future__ import annotations

import time

from fastapi import APIRouter, status

from prefixtune.serve.api.deps import AccessDep, AdminDep, EngineDep
from prefixtune.serve.api.protocol import AdapterDeleted, LoadAdapterRequest, ModelCard, ModelList
from prefixtune.serve.engine.messages import AdapterInfo

router = APIRouter(prefix="/v1", tags=["models"])

_STARTED = int(time.time())  # the base model's `created`: when this server process started


def adapter_card(info: AdapterInfo, base: str) -> ModelCard:
    return ModelCard(
        id=info.name,
        created=info.created,
        root=info.name,  # not the directory: server paths are not shown to tenants
        parent=base,
        method=info.method,
        num_virtual_tokens=info.num_virtual_tokens,
    )


@router.get("/models")
async def list_models(engine: EngineDep, access: AccessDep) -> ModelList:
    """The base model and every adapter this key may use (each adapter's `parent` is the base)."""
    base = ModelCard(id=engine.model_name, created=_STARTED, root=engine.model_name)
    adapters = [adapter_card(i, engine.model_name) for i in engine.list_adapters() if access.may_use(i)]
    return ModelList(data=[base, *adapters])


@router.post("/adapters", status_code=status.HTTP_201_CREATED)
async def load_adapter(body: LoadAdapterRequest, engine: EngineDep, access: AdminDep) -> ModelCard:
    """Load an adapter directory (inside the adapter root) under `name`; 201 with its model card."""
    info = await engine.load_adapter(body.name, body.path, body.api_keys)
    return adapter_card(info, engine.model_name)


@router.delete("/adapters/{name}")
async def unload_adapter(name: str, engine: EngineDep, access: AdminDep) -> AdapterDeleted:
    """Unload an adapter; requests already running with it finish."""
    await engine.unload_adapter(name)
    return AdapterDeleted(id=name)
