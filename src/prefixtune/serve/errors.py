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


class AccessRuleError(InvalidRequestError):
    """A load would serve files that are restricted under another name without giving keys (widening access)."""


class AdapterExistsError(PrefixtuneError):
    """An adapter of that name is already registered; unload it first."""


class EngineShutdownError(PrefixtuneError):
    """The engine is draining or stopped and accepts no new requests."""


class RegistryStateError(PrefixtuneError):
    """The registry's persisted state (access rules, runtime loads) cannot be read or written, or an access rule
    cannot be established; the adapter is refused rather than opened to every key."""


class AdapterIntegrityError(PrefixtuneError):
    """An adapter's files changed on disk (or broke) after it was loaded, found when it is compiled again after
    an eviction: a server-side fault (5xx), not the tenant's; an admin must reload the adapter."""


class EncoderModelError(InvalidRequestError):
    """A generation request (completions, chat) to a server whose base model is an encoder (issue 12)."""


class NotAnEncoderError(InvalidRequestError):
    """A classification request (/v1/classify) to a server whose base model is generative."""


class NotAClassifierError(InvalidRequestError):
    """A classification request for an adapter (or a bare base model) that has no sequence-classification head."""


class EngineStepError(PrefixtuneError):
    """A batch failed on the engine (a bug or a device fault, logged there); the request may be retried."""
