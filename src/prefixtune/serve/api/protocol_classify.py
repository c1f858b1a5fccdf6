"""Pydantic models of POST /v1/classify, in the shape of vLLM's classification API (only at the HTTP edge).

Request `{"model", "input": str | [str]}`; response `{"id": "classify-...", "object": "list", "created",
"model", "data": [{"index", "label", "probs", "num_classes"}], "usage"}`, as vLLM's `ClassificationRequest` /
`ClassificationResponse`. Unknown fields (vLLM's `truncate_prompt_tokens`, `user`, ...) are accepted and
logged at DEBUG.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from prefixtune.serve.api.protocol import _Lenient, new_id, now


class ClassificationRequest(_Lenient):
    model: str
    input: str | list[str]

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class ClassificationData(BaseModel):
    index: int
    label: str | None
    probs: list[float]
    num_classes: int


class ClassificationUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0
    prompt_tokens_details: None = None


class ClassificationResponse(BaseModel):
    id: str = Field(default_factory=lambda: new_id("classify"))
    object: str = "list"
    created: int = Field(default_factory=now)
    model: str
    data: list[ClassificationData]
    usage: ClassificationUsage
