"""Errors of the serving layer, on top of the library hierarchy in `prefixtune.errors`.

The HTTP layer maps each class (never its message text) to a status and an OpenAI error type in one table
(`api/errors.py`). Depends only on `prefixtune.errors`.
"""

from __future__ import annotations

from prefixtune.errors import PrefixtuneError


class InvalidRequestError(PrefixtuneError, ValueError):
    """A generation request is well-formed JSON but asks for something the engine cannot do."""


class ContextLengthError(InvalidRequestError):
    """prompt tokens + max_tokens (+ the adapter's prefix, for learned positions) exceed the context."""


class AdapterNameError(InvalidRequestError):
    """An adapter name or path is not allowed (path traversal, outside the adapter root, bad characters)."""


class AdapterExistsError(PrefixtuneError):
    """An adapter of that name is already registered; unload it first."""


class EngineShutdownError(PrefixtuneError):
    """The engine is draining or stopped and accepts no new requests."""
