"""The logic behind POST /v1/classify (the route stays thin).

Resolve the adapter from `model` (the same access rules as completions: another tenant's adapter is a 404),
check and tokenize every input, classify them in one engine call (each input is a row of the engine's mixed
batches), and shape vLLM's response. Inputs are refused, before anything is queued, when the list is empty,
an input is the empty string, or there are more than the engine ever queues. The server's request timeout
applies; a request that times out or whose client leaves drops its rows that have not run.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import Request

from prefixtune.serve.api.deps import Access, ApiSettings
from prefixtune.serve.api.protocol_classify import (
    ClassificationData,
    ClassificationRequest,
    ClassificationResponse,
    ClassificationUsage,
)
from prefixtune.serve.api.serving import run_for_client
from prefixtune.serve.engine.messages import ClassifyRequest
from prefixtune.serve.engine.protocol import Engine
from prefixtune.serve.errors import InvalidRequestError

logger = logging.getLogger(__name__)


def _inputs(body: ClassificationRequest, settings: ApiSettings) -> list[str]:
    texts = body.texts()
    if not texts:
        raise InvalidRequestError("input is an empty list; send a string or a non-empty list of strings")
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        raise InvalidRequestError(f"input {empty[0]} is an empty string; every input needs some text")
    if settings.max_waiting is not None and len(texts) > settings.max_waiting:  # could never be queued: not a 429
        raise InvalidRequestError(
            f"the request has {len(texts)} inputs, more than this server ever queues at once "
            f"({settings.max_waiting}, --max-waiting); send fewer inputs per request"
        )
    return texts


async def create_classification(
    body: ClassificationRequest, engine: Engine, access: Access, settings: ApiSettings, request: Request
) -> ClassificationResponse:
    """Classify every input of `body` with the adapter its `model` names."""
    if body.model_extra:
        logger.debug("ignoring unknown request fields %s", sorted(body.model_extra))
    adapter = access.adapter_for(engine, body.model)
    texts = _inputs(body, settings)
    inputs = tuple(tuple(engine.encode(t)) for t in texts)
    work = ClassifyRequest(uuid.uuid4().hex, inputs, adapter)
    results = await run_for_client(engine.classify(work), request, settings.request_timeout_s)
    data = [
        ClassificationData(index=i, label=r.label, probs=list(r.probs), num_classes=len(r.probs))
        for i, r in enumerate(results)
    ]
    tokens = sum(r.num_prompt_tokens for r in results)
    return ClassificationResponse(
        model=body.model, data=data, usage=ClassificationUsage(prompt_tokens=tokens, total_tokens=tokens)
    )
