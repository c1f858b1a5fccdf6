"""`RegistryMethods`: the `Engine` protocol's adapter methods, answered by the engine's `AdapterRegistry`.

Every engine (built-in generative, encoder classification, vLLM) keeps its adapters in one registry, so the
four protocol methods are the same delegation in each: one copy here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefixtune.serve.engine.messages import AdapterInfo
    from prefixtune.serve.registry import AdapterRegistry


class RegistryMethods:
    """Mixin for an engine with a `registry` attribute."""

    registry: AdapterRegistry

    def list_adapters(self) -> list[AdapterInfo]:
        return self.registry.list()

    def get_adapter(self, name: str) -> AdapterInfo:
        return self.registry.get(name)

    async def load_adapter(self, name: str, path: str, api_keys: Sequence[str] = ()) -> AdapterInfo:
        return await self.registry.load(name, path, api_keys)

    async def unload_adapter(self, name: str) -> None:
        await self.registry.unload(name)
