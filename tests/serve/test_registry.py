"""The adapter registry as logic, with a fake compiler: names, paths, LRU budget, locks, failed loads."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from prefixtune.errors import AdapterFormatError, AdapterNotFoundError, IncompatibleBaseModelError
from prefixtune.serve.errors import AdapterExistsError, AdapterNameError
from prefixtune.serve.metrics import ServeMetrics
from prefixtune.serve.registry import AdapterRegistry, AdapterSpec
from prefixtune.serve.registry_config import RegistryConfig
from prefixtune.serve.registry_state import hash_key


@dataclass(frozen=True)
class FakePrefix:
    nbytes: int
    num_virtual_tokens: int = 2


class FakeCompiler:
    """Directories named bad* are malformed, wrong* are for another base; size from the name's digits."""

    def __init__(self) -> None:
        self.compiles: list[str] = []

    def inspect(self, path: Path) -> AdapterSpec:
        if not path.is_dir() or path.name.startswith("bad"):
            raise AdapterFormatError(f"{path}: not an adapter")
        if path.name.startswith("wrong"):
            raise IncompatibleBaseModelError(f"{path}: other base")
        return AdapterSpec("kv", 2)

    def compile(self, path: Path) -> FakePrefix:
        self.compiles.append(path.name)
        return FakePrefix(nbytes=100)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for name in ("a", "b", "c", "bad", "wrong", "nested/d"):
        (tmp_path / name).mkdir(parents=True)
    return tmp_path


def make(root: Path, budget: int = 250) -> tuple[AdapterRegistry, FakeCompiler, ServeMetrics]:
    compiler, metrics = FakeCompiler(), ServeMetrics()
    return (
        AdapterRegistry(root, compiler, RegistryConfig(budget / 2**20), metrics=metrics, reserved_names=("base",)),
        compiler,
        metrics,
    )


def test_names_and_paths_are_validated(root):
    registry, _, _ = make(root)
    for name in ("../x", "a/b", "", ".hidden", "x" * 200, "base", "a..b"):
        with pytest.raises(AdapterNameError):
            asyncio.run(registry.load(name, "a"))
    for path in ("..", "../..", "/etc", str(root.parent), ".", "a/../../x"):
        with pytest.raises(AdapterNameError):
            asyncio.run(registry.load("ok", path))
    (root / "link").symlink_to(root.parent)
    with pytest.raises(AdapterNameError):
        asyncio.run(registry.load("ok", "link"))
    assert registry.list() == []
    asyncio.run(registry.load("nested-d", "nested/d"))
    assert [i.name for i in registry.list()] == ["nested-d"]


def test_failed_loads_leave_the_registry_unchanged(root):
    registry, _, metrics = make(root)
    asyncio.run(registry.load("a", "a"))
    before = registry.list()
    for name, path, error in (
        ("x", "bad", AdapterFormatError),
        ("x", "wrong", IncompatibleBaseModelError),
        ("x", "missing", AdapterFormatError),
        ("a", "b", AdapterExistsError),
    ):
        with pytest.raises(error):
            asyncio.run(registry.load(name, path))
    assert registry.list() == before
    assert metrics.adapters._value.get() == 1


def test_lru_budget_evicts_and_recompiles_on_demand(root):
    registry, compiler, metrics = make(root, budget=250)

    async def scenario() -> None:
        for name in ("a", "b", "c"):
            await registry.load(name, name)
        assert [i.name for i in registry.list() if i.is_cached] == ["b", "c"]  # a evicted (300 > 250)
        await registry.acquire("b")  # hit; b is now most recent
        await registry.acquire("a")  # miss: recompiled, evicts c
        assert [i.name for i in registry.list() if i.is_cached] == ["a", "b"]

    asyncio.run(scenario())
    assert compiler.compiles == ["a", "b", "c", "a"]
    assert (metrics.cache_hits._value.get(), metrics.cache_misses._value.get()) == (1, 1)
    assert metrics.cache_evictions._value.get() == 2
    assert registry.cached_bytes <= 250


def test_concurrent_acquires_compile_once_and_unload_forgets(root):
    registry, compiler, _ = make(root, budget=10)  # nothing stays cached beyond the newest

    async def scenario() -> None:
        await registry.load("a", "a")
        await registry.load("b", "b")
        await asyncio.gather(*(registry.acquire("a") for _ in range(5)))
        await registry.unload("a")
        with pytest.raises(AdapterNotFoundError):
            await registry.acquire("a")
        with pytest.raises(AdapterNotFoundError):
            await registry.unload("a")

    asyncio.run(scenario())
    assert compiler.compiles == ["a", "b", "a"]


def test_load_root_skips_bad_directories(root):
    registry, _, _ = make(root, budget=10_000)
    loaded = asyncio.run(registry.load_root({"a": ["k"]}))
    assert loaded == ["a", "b", "c", "nested"]
    assert registry.get("a").key_sha256 == frozenset({hash_key("k")})
