"""`AdapterRegistry`: which adapters exist, where they live, and an LRU of their compiled prefixes.

One job: names -> adapter directories (inside one root) -> compiled prefixes, under a memory budget. It never
touches tensors itself: an `AdapterCompiler` reads, validates and compiles (see `serve/compiler.py`), and
compilation runs wherever the engine says (`run_compile`, given at construction: the built-in engine's thread,
where compiling the frozen model cannot race a forward pass; a worker thread for the vLLM front end).

Rules (issue 4): names are validated and map only to directories inside the adapter root; an adapter made
for another base model is refused (IncompatibleBaseModelError, raised by the compiler); a load or unload
holds that name's lock; a failed load leaves the registry exactly as it was; evicted prefixes are
recompiled on demand (requests already running keep theirs alive by reference).

Issue 10: every file of an adapter must resolve inside the root (a symlink out is refused); the registry
hashes the files itself at load (`adapter_digest`, for any compiler) and again before recompiling after an
eviction, and a mismatch or a broken file then is an `AdapterIntegrityError` (a server-side 5xx, logged and
counted), never new weights going live. Access rules (key hashes) and runtime loads are persisted in
`RegistryState` under the root, so they survive restarts and unload + reload; a load without keys keeps the
name's rule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from prefixtune.config import ADAPTER_NAME_PATTERN, ADAPTER_NAME_RULE, is_valid_adapter_name
from prefixtune.errors import AdapterFormatError, AdapterNotFoundError, IncompatibleBaseModelError, PrefixtuneError
from prefixtune.serve.adapter_digest import adapter_digest
from prefixtune.serve.engine.messages import AdapterInfo
from prefixtune.serve.errors import AdapterExistsError, AdapterIntegrityError, AdapterNameError
from prefixtune.serve.metrics import ServeMetrics
from prefixtune.serve.registry_config import RegistryConfig
from prefixtune.serve.registry_state import RegistryState, hash_key

logger = logging.getLogger(__name__)

NAME_PATTERN = ADAPTER_NAME_PATTERN  # the one rule, in prefixtune.config; kept under this name for callers


class CompiledPrefix(Protocol):
    """What the registry needs of a compiled prefix (a `PrefixKV`)."""

    @property
    def nbytes(self) -> int: ...

    @property
    def num_virtual_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """What reading an adapter directory tells, before compiling it."""

    method: str
    num_virtual_tokens: int


class AdapterCompiler(Protocol):
    """Reads and compiles adapter directories for one base model."""

    def inspect(self, path: Path) -> AdapterSpec:
        """Validate files, shapes and the base-model fingerprint. Raises AdapterFormatError,
        IncompatibleBaseModelError."""
        ...

    def compile(self, path: Path) -> CompiledPrefix:
        """The adapter's per-layer keys/values, ready to inject (detached, on the model's device)."""
        ...


RunCompile = Callable[[Callable[[], Any]], Awaitable[Any]]


async def run_in_thread(fn: Callable[[], Any]) -> Any:
    """A `RunCompile` that runs the compile in a worker thread."""
    return await asyncio.to_thread(fn)


def validate_name(name: str) -> str:
    """Return `name` if it is a valid adapter name, else raise AdapterNameError."""
    if not is_valid_adapter_name(name):
        raise AdapterNameError(f"adapter name {name!r} is invalid: {ADAPTER_NAME_RULE}")
    return name


class AdapterRegistry:
    """Registered adapters plus an LRU cache of compiled prefixes (see the module docstring).

    Args:
        root: the adapter root; every adapter directory must resolve inside it (None: loading refused).
        compiler: reads and compiles adapter directories.
        config: the compiled-prefix cache's budget (`RegistryConfig.cache_bytes`; its admission rule is the
            compiler's).
        metrics: where cache hits/misses/evictions go.
        run_compile: runs a compile function and awaits it (default: `run_in_thread`, a worker thread; the
            built-in engine passes `EngineCalls.run`).
        reserved_names: names adapters may not take (the base model's).

    Raises:
        RegistryStateError: the persisted state under `root` exists but cannot be read.
    """

    def __init__(
        self,
        root: Path | None,
        compiler: AdapterCompiler,
        config: RegistryConfig | None = None,
        *,
        metrics: ServeMetrics | None = None,
        run_compile: RunCompile | None = None,
        reserved_names: Sequence[str] = (),
    ) -> None:
        self.root = root.resolve() if root is not None else None
        self.compiler = compiler
        self.config = config or RegistryConfig()
        self.metrics = metrics or ServeMetrics()
        self._run_compile = run_compile or run_in_thread
        self.reserved = set(reserved_names)
        self.state = RegistryState(self.root)
        self._entries: dict[str, AdapterInfo] = {}
        self._digests: dict[str, str] = {}  # name -> adapter_digest at load
        self._cache: OrderedDict[str, CompiledPrefix] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    # ----- queries ----------------------------------------------------------------------------------
    def list(self) -> list[AdapterInfo]:
        return [replace(info, is_cached=name in self._cache) for name, info in sorted(self._entries.items())]

    def get(self, name: str) -> AdapterInfo:
        info = self._entries.get(name)
        if info is None:
            raise AdapterNotFoundError(f"no adapter named {name!r} is registered")  # names no other adapter
        return replace(info, is_cached=name in self._cache)

    @property
    def cached_bytes(self) -> int:
        return sum(p.nbytes for p in self._cache.values())

    # ----- load / unload ----------------------------------------------------------------------------
    def resolve_path(self, path: str | Path) -> Path:
        """`path` (absolute, or relative to the root) as a directory inside the root, else AdapterNameError."""
        if self.root is None:
            raise AdapterNameError("this server has no adapter root; start it with --adapters DIR")
        try:
            candidate = Path(path)
            full = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
        except (ValueError, OSError):  # a NUL byte, a symlink loop, ...
            full = self.root
        if full == self.root or not full.is_relative_to(self.root):
            raise AdapterNameError(f"adapter path {str(path)!r} is not a directory inside the adapter root")
        return full

    async def load(self, name: str, path: str | Path, api_keys: Sequence[str] = ()) -> AdapterInfo:
        """Register and compile an adapter. On any error nothing changes.

        Args:
            name: the adapter name. path: its directory (relative to the root, or absolute inside it).
            api_keys: keys that may use it; they replace the name's rule. Empty: keep the name's rule (from
                --adapter-keys or an earlier load; open if it never had one).

        Raises:
            AdapterNameError, AdapterExistsError, AdapterFormatError, IncompatibleBaseModelError,
            AccessRuleError (files restricted under another name, no keys given), RegistryStateError.
        """
        validate_name(name)
        if name in self.reserved:
            raise AdapterNameError(f"{name!r} is the base model's name; choose another adapter name")
        full = self.resolve_path(path)
        relative = full.relative_to(self.root).as_posix()  # type: ignore[arg-type]
        async with self._lock(name):
            if name in self._entries:
                raise AdapterExistsError(f"an adapter named {name!r} is already loaded; unload it first")
            keys = frozenset(hash_key(k) for k in api_keys) if api_keys else self.state.rule(name, relative)
            digest = await asyncio.to_thread(self._digest, full)
            try:
                spec = await asyncio.to_thread(self.compiler.inspect, full)
                prefix = await self._run_compile(lambda: self.compiler.compile(full))
            except (AdapterFormatError, IncompatibleBaseModelError) as exc:  # no server paths in HTTP answers
                raise type(exc)(str(exc).replace(str(self.root), "<adapter root>")) from None
            if await asyncio.to_thread(self._digest, full) != digest:
                raise AdapterFormatError(f"adapter {name!r} changed on disk while it was loading; load it again")
            with self.state.change():
                if api_keys:
                    self.state.set_rule(name, api_keys)
                # Top-level directories under their own name are loaded at every start anyway.
                self.state.mark_loaded(name, None if relative == name else relative)
            info = AdapterInfo(
                name=name,
                path=str(full),
                method=spec.method,
                num_virtual_tokens=spec.num_virtual_tokens,
                created=int(time.time()),
                key_sha256=keys or frozenset(),
            )
            self._entries[name], self._digests[name] = info, digest
            self._insert(name, prefix)
            self.metrics.adapters.set(len(self._entries))
        logger.info("adapter %s loaded from %s (%s, m=%d)", name, full, spec.method, spec.num_virtual_tokens)
        return info

    async def unload(self, name: str) -> None:
        """Unregister an adapter (requests already running with it finish); its access rule is kept, so
        loading it again without keys restores it. Raises AdapterNotFoundError, RegistryStateError."""
        async with self._lock(name):
            self.get(name)
            with self.state.change():
                self.state.mark_loaded(name, None)
            del self._entries[name]
            self._digests.pop(name, None)
            self._cache.pop(name, None)
            self.metrics.adapters.set(len(self._entries))
            self.metrics.cache_bytes.set(self.cached_bytes)
        logger.info("adapter %s unloaded", name)

    async def load_root(self, api_keys: dict[str, Sequence[str]] | None = None) -> list[str]:
        """Start-up: apply the --adapter-keys rules (they win for the names they list), load the adapters
        loaded at runtime before the last stop, then every other subdirectory of the root under its name; a
        bad one is logged and skipped. Returns the names loaded."""
        if self.root is None:
            return []
        self.state.configure(api_keys or {})
        loaded = []
        restored = [(name, Path(rel)) for name, rel in sorted(self.state.loaded.items())]
        subdirs = [(p.name, p) for p in sorted(self.root.iterdir()) if p.is_dir()]
        for name, path in [*restored, *subdirs]:
            if name in self._entries:
                continue
            try:
                await self.load(name, path)
                loaded.append(name)
            except PrefixtuneError as exc:
                logger.warning("skipping adapter %r (%s): %s", name, path, exc)
        return loaded

    def _digest(self, full: Path) -> str:
        """`adapter_digest` of `full`. Raises AdapterNameError (a file outside the root), AdapterFormatError."""
        assert self.root is not None
        try:
            return adapter_digest(full, self.root)
        except OSError as exc:
            raise AdapterFormatError(f"adapter directory {full.name!r} cannot be read ({exc.strerror})") from None

    # ----- compiled prefixes ------------------------------------------------------------------------
    async def acquire(self, name: str) -> CompiledPrefix:
        """The compiled prefix of `name`, compiling it again if it was evicted. Raises AdapterNotFoundError."""
        prefix = self._cache.get(name)
        if prefix is not None and name in self._entries:
            self._cache.move_to_end(name)
            self.metrics.cache_hits.inc()
            return prefix
        async with self._lock(name):
            info = self.get(name)
            prefix = self._cache.get(name)
            if prefix is None:
                self.metrics.cache_misses.inc()
                prefix = await self._recompile(info)
                if name in self._entries:  # not unloaded meanwhile
                    self._insert(name, prefix)
            else:
                self.metrics.cache_hits.inc()
            return prefix

    async def _recompile(self, info: AdapterInfo) -> CompiledPrefix:
        """Compile an evicted adapter again, only if its files still hash as at load (before and after).

        Raises:
            AdapterIntegrityError: changed, missing or broken files (logged with the path, counted; the
                message names no server path).
        """
        path, expected = Path(info.path), self._digests.get(info.name)
        try:
            if await asyncio.to_thread(self._digest, path) != expected:
                raise _Changed
            prefix = await self._run_compile(lambda: self.compiler.compile(path))
            if await asyncio.to_thread(self._digest, path) != expected:
                raise _Changed
        except (PrefixtuneError, _Changed) as exc:
            self.metrics.integrity_failures.inc()
            reason = "its files changed since it was loaded" if isinstance(exc, _Changed) else str(exc)
            logger.error("adapter %s (%s) not recompiled: %s; reload it", info.name, path, reason)
            raise AdapterIntegrityError(
                f"adapter {info.name!r} cannot be served: its files changed or broke on the server after it was "
                "loaded; the server's admin must reload it"
            ) from None
        return prefix

    def _insert(self, name: str, prefix: CompiledPrefix) -> None:
        self._cache[name] = prefix
        self._cache.move_to_end(name)
        while self.cached_bytes > self.config.cache_bytes and len(self._cache) > 1:
            evicted, _ = self._cache.popitem(last=False)
            self.metrics.cache_evictions.inc()
            logger.info("adapter %s evicted from the compiled-prefix cache", evicted)
        self.metrics.cache_bytes.set(self.cached_bytes)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())


class _Changed(Exception):
    """The files hash differently from the load's digest."""
