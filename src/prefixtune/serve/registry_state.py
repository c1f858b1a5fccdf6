"""`RegistryState`: the registry's durable part, one JSON file under the adapter root (issue 10).

One job: remember, across restarts, unloads and reloads, who may use each adapter name (the sha256 of its
keys, never the keys) and which adapters were loaded at runtime from which directory. Written atomically on
every change. Depends on `prefixtune.io.atomic` and the error classes only.

Rules: a rule, once set for a name, stays until an explicit new `api_keys` (or the `--adapter-keys` file,
applied at every start and winning for the names it lists) replaces it; unloading keeps it. An unreadable
state file is an error, never an empty state: an unknown rule must not become "open to everyone".
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from prefixtune.io.atomic import atomic_write_text
from prefixtune.serve.errors import AccessRuleError, RegistryStateError

logger = logging.getLogger(__name__)

STATE_FILE = ".prefixtune-registry.json"
STATE_VERSION = 1


def hash_key(key: str) -> str:
    """The sha256 (hex) of an API key: what is stored and compared, never the key itself."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class RegistryState:
    """Access rules and runtime loads of one adapter root, persisted in `root/.prefixtune-registry.json`.

    Args:
        root: the adapter root (None: nothing is persisted; such a server loads no adapters).

    Raises:
        RegistryStateError: the file exists but cannot be read or is malformed.
    """

    def __init__(self, root: Path | None) -> None:
        self.file = root / STATE_FILE if root is not None else None
        self.rules: dict[str, frozenset[str]] = {}  # name -> key hashes (absent: open)
        self.loaded: dict[str, str] = {}  # runtime-loaded name -> path relative to the root
        if self.file is not None and self.file.exists():
            self._read()

    def _read(self) -> None:
        assert self.file is not None
        try:
            document = json.loads(self.file.read_text(encoding="utf-8"))
            if document.get("format_version") != STATE_VERSION:
                raise ValueError(f"format_version {document.get('format_version')!r}, expected {STATE_VERSION}")
            self.rules = {str(n): frozenset(_hashes(h)) for n, h in document["rules"].items()}
            self.loaded = {str(n): str(p) for n, p in document["loaded"].items()}
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RegistryStateError(
                f"cannot read the registry state {self.file} ({type(exc).__name__}: {exc}); it holds the adapters' "
                "access rules, so the server does not start without it: restore it, or remove it and give every "
                "rule again with --adapter-keys"
            ) from None

    def rule(self, name: str, path: str) -> frozenset[str] | None:
        """The key hashes that may use `name` served from `path` (relative), or None when it is open.

        Raises:
            AccessRuleError: `name` has no rule but `path` is restricted under another name; opening the same
                files under a new name would widen access silently.
        """
        if name in self.rules:
            return self.rules[name] or None
        # The same files under other names: runtime loads, and a top-level directory under its own name.
        others = [n for n, p in self.loaded.items() if p == path] + [path]
        guarded = sorted(n for n in others if self.rules.get(n))
        if guarded:
            raise AccessRuleError(
                f"the directory {path!r} is served with restricted access as {guarded[0]!r}; give api_keys to load "
                f"it as {name!r}"
            )
        return None

    def configure(self, keys: Mapping[str, Iterable[str]]) -> None:
        """Apply the --adapter-keys rules (raw keys, hashed here) at start-up: they replace the stored rules of
        the names they list, and are stored like any rule, so dropping a name from the file later does not
        open its adapter. A root that cannot be written keeps them in memory (the file is re-applied at every
        start) with a warning."""
        before = dict(self.rules)
        with self.change(persist=False):
            for name, ks in keys.items():
                self.set_rule(name, ks)
        if self.rules == before:
            return
        try:
            self.write()
        except RegistryStateError as exc:
            logger.warning("--adapter-keys rules apply but are not stored: %s", exc)

    def set_rule(self, name: str, keys: Iterable[str]) -> None:
        """Make `keys` (raw keys; stored as hashes) the rule of `name`. Call inside `change()`."""
        self.rules[name] = frozenset(hash_key(k) for k in keys)

    def mark_loaded(self, name: str, path: str | None) -> None:
        """Record a runtime load (`path` relative to the root) or an unload (None). Call inside `change()`."""
        if path is None:
            self.loaded.pop(name, None)
        else:
            self.loaded[name] = path

    @contextmanager
    def change(self, *, persist: bool = True) -> Iterator[None]:
        """Changes made in the block are written when it ends (only if something changed); if the block or the
        write fails, the state is as before. Raises RegistryStateError when the file cannot be written."""
        rules, loaded = dict(self.rules), dict(self.loaded)
        try:
            yield
            if persist and (rules, loaded) != (self.rules, self.loaded):
                self.write()
        except BaseException:
            self.rules, self.loaded = rules, loaded
            raise

    def write(self) -> None:
        """Persist atomically. Raises RegistryStateError (the caller then undoes its change)."""
        if self.file is None:
            return
        document = {
            "format_version": STATE_VERSION,
            "rules": {n: sorted(h) for n, h in sorted(self.rules.items())},
            "loaded": dict(sorted(self.loaded.items())),
        }
        try:
            atomic_write_text(self.file, json.dumps(document, indent=2) + "\n")
        except OSError as exc:
            raise RegistryStateError(
                f"cannot write the registry state {self.file} ({exc}); the adapter root must be writable to "
                "change access rules or load adapters at runtime"
            ) from None


def _hashes(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(h, str) and len(h) == 64 for h in value):
        raise ValueError("a rule must be a list of sha256 hex digests")
    return value
