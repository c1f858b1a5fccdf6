"""The exception hierarchy of prefixtune.

Every error the library raises on purpose derives from `PrefixtuneError`, so callers (the CLI, the server's
error handlers) can tell ours apart from bugs without reading message text. Messages say what was wrong, the
value seen, and what to do. This module depends on nothing else in the package.
"""

from __future__ import annotations


class PrefixtuneError(Exception):
    """Base class of every error prefixtune raises on purpose."""


class ConfigError(PrefixtuneError, ValueError):
    """A configuration is invalid. `problems` lists every problem found, not only the first."""

    def __init__(self, problems: list[str] | str, *, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        if len(self.problems) == 1:
            message = f"invalid configuration{where}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"invalid configuration{where} ({len(self.problems)} problems):\n{lines}"
        super().__init__(message)


class AdapterFormatError(PrefixtuneError):
    """An adapter directory or file is missing, truncated, malformed, or holds invalid values."""


class IncompatibleBaseModelError(PrefixtuneError):
    """An adapter was made for a different base model (architecture or weights) than the one given."""


class AdapterNotFoundError(PrefixtuneError, KeyError):
    """No adapter of that name is attached or registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnsupportedModelError(PrefixtuneError):
    """The base model lacks something prefixtune needs (an attention implementation, a layer list, ...)."""


class CheckpointError(PrefixtuneError):
    """A training checkpoint is missing, truncated, malformed, or in the old pickle format (never unpickled)."""


class DataError(PrefixtuneError):
    """Training or evaluation data is malformed; the message names the file and line."""


class EngineBusyError(PrefixtuneError):
    """The serving engine's queue is full; retry later."""
