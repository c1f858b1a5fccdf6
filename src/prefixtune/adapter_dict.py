"""`AdapterDict`: the `nn.ModuleDict` that holds a `PrefixModel`'s adapters under their names.

torch refuses a '.' in a module name (it separates the parts of a parameter's path), but the adapter-name
rule (`prefixtune.config.ADAPTER_NAME_RULE`) allows one ("v1.2"), as the server always has. The dict stores
each name with '.' written as '%2E' ('%' is outside the rule, so no two names collide) and shows the real
names everywhere else. Depends on torch only.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

_DOT, _ESCAPED = ".", "%2E"


def _key(name: str) -> str:
    return name.replace(_DOT, _ESCAPED)


def _name(key: str) -> str:
    return key.replace(_ESCAPED, _DOT)


class AdapterDict(nn.ModuleDict):
    """A `ModuleDict` whose keys may hold '.'; iteration, `keys()` and `items()` give the real names."""

    def __getitem__(self, name: str) -> nn.Module:
        return super().__getitem__(_key(name))

    def __setitem__(self, name: str, module: nn.Module) -> None:
        super().__setitem__(_key(name), module)

    def __delitem__(self, name: str) -> None:
        super().__delitem__(_key(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(_key(name))

    def __iter__(self) -> Iterator[str]:
        return (_name(key) for key in super().__iter__())

    def keys(self) -> list[str]:  # type: ignore[override]
        return list(self)

    def items(self) -> list[tuple[str, nn.Module]]:  # type: ignore[override]
        return [(_name(key), module) for key, module in super().items()]
