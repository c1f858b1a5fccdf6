"""The `Engine` protocol: everything the HTTP layer may ask of the engine (no torch here).

`serve/api` depends on this protocol only, so routes can be tested against a fake engine and the engine
can move to another process without touching HTTP code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from prefixtune.serve.engine.messages import (
    AdapterInfo,
    ChatTurn,
    Classification,
    ClassifyRequest,
    EngineStats,
    GenerationOutput,
    GenerationRequest,
)


class OutputStream(Protocol):
    """The outputs of one submitted request. Iterate it; `cancel` frees its slot (idempotent)."""

    def __aiter__(self) -> AsyncIterator[GenerationOutput]: ...

    async def cancel(self) -> None: ...


class Engine(Protocol):
    """An engine serving one base model and many adapters.

    `submit` validates before queueing, so a bad request fails with a typed error (see `serve.errors`,
    `prefixtune.errors`) before any output is streamed.
    """

    @property
    def model_name(self) -> str: ...

    @property
    def max_model_len(self) -> int: ...

    def encode(self, text: str) -> list[int]:
        """Tokenize a prompt (adds the tokenizer's special tokens)."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """The text of token ids, as completions are decoded (special tokens skipped)."""
        ...

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        """Each token decoded alone (special tokens kept), for logprobs; the strings of a sequence may not
        concatenate to its text (a multi-byte character split over tokens, a tokenizer's leading space)."""
        ...

    def render_chat(self, turns: Sequence[ChatTurn]) -> str:
        """The prompt text of a chat, ending with the assistant's turn opened."""
        ...

    async def submit(self, request: GenerationRequest) -> OutputStream:
        """Queue a request.

        Raises:
            AdapterNotFoundError: unknown adapter. ContextLengthError: too long. EngineBusyError: queue full.
            EngineShutdownError: draining.
        """
        ...

    async def classify(self, request: ClassifyRequest) -> list[Classification]:
        """Classify each input with the adapter's prefix and sequence-classification head (an encoder).

        Raises:
            NotAnEncoderError: a generative model. NotAClassifierError: no classification head.
            AdapterNotFoundError, ContextLengthError, EngineBusyError, EngineShutdownError.
        """
        ...

    def list_adapters(self) -> list[AdapterInfo]: ...

    def get_adapter(self, name: str) -> AdapterInfo:
        """Raises AdapterNotFoundError."""
        ...

    async def load_adapter(self, name: str, path: str, api_keys: Sequence[str] = ()) -> AdapterInfo:
        """Register and compile an adapter; on any error the registry is unchanged."""
        ...

    async def unload_adapter(self, name: str) -> None:
        """Unregister an adapter; requests already running with it finish."""
        ...

    def stats(self) -> EngineStats: ...

    async def start(self) -> None:
        """Start serving (called by the app's lifespan)."""
        ...

    async def shutdown(self, drain_timeout: float = 30.0) -> None:
        """Stop accepting requests, let running ones finish (up to `drain_timeout` s), stop."""
        ...
