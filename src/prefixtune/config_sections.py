"""Config dataclasses made of other config dataclasses ("sections"), seen flat: one name per leaf field.

One job: `ServeConfig` holds each serving part's own config (scheduler, registry, API, vLLM, ...) as a field,
while a CLI flag, a config-file key and a keyword of `from_flat` stay one flat name per leaf field
(`max_num_seqs`, `vllm_dtype`), so the flags and files written before the split keep working. A section is
declared with `metadata=section(cls, flag_prefix=...)`; a leaf field with metadata `{"flag": False}` is set by code,
never by a flag or file. Depends only on the standard library.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import Field, dataclass
from typing import Any


def flag_help(text: str) -> dict[str, str]:
    """A field's metadata: its help string, which the CLI flag reuses."""
    return {"help": text}


def section(cls: type, *, flag_prefix: str = "") -> dict[str, Any]:
    """The metadata of a field holding the config dataclass `cls`, its leaves named `flag_prefix + name`:
    `part: Part = field(default_factory=Part, metadata=section(Part))`."""
    return {"section": cls, "flag_prefix": flag_prefix}


@dataclass(frozen=True, slots=True)
class FlatField:
    """A leaf field seen flat: `name` (the flag / file key) and where it lives (`path`: field names)."""

    name: str
    path: tuple[str, ...]
    field: Field


def flat_fields(cls: type) -> list[FlatField]:
    """Every settable leaf of `cls`, sections walked in field order (a plain dataclass: its own fields).

    Raises:
        TypeError: two leaves would share one flat name (a bug in the config classes).
    """
    out = list(_walk(cls, "", ()))
    names = [f.name for f in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TypeError(f"{cls.__name__}: flat names {duplicates} are used by more than one field")
    return out


def _walk(cls: type, prefix: str, path: tuple[str, ...]) -> Iterator[FlatField]:
    for f in dataclasses.fields(cls):
        inner = f.metadata.get("section")
        if inner is not None:
            yield from _walk(inner, prefix + f.metadata.get("flag_prefix", ""), (*path, f.name))
        elif f.metadata.get("flag", True):
            yield FlatField(prefix + f.name, (*path, f.name), f)


def from_flat(cls: type, values: Mapping[str, Any]) -> Any:
    """`cls` built from flat names (missing ones keep their defaults).

    Raises:
        TypeError: a name that is no leaf of `cls`.
    """
    return replace_flat(cls(), values)


def replace_flat(obj: Any, changes: Mapping[str, Any]) -> Any:
    """A copy of `obj` with leaves changed by flat name; a section's own field name replaces it whole.

    Raises:
        TypeError: a name that is neither a leaf's flat name nor a field of `obj`.
    """
    leaves = {f.name: f.path for f in flat_fields(type(obj))}
    own = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(k for k in changes if k not in leaves and k not in own)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field(s) {unknown}; known: {sorted(leaves)}")
    nested = _Changes()
    for name, value in changes.items():
        path = leaves.get(name, (name,))
        _set(nested, path, value)
    return _apply(obj, nested)


class _Changes(dict):
    """Changes inside one section (a type of its own: a leaf's value may itself be a dict)."""


def _set(tree: _Changes, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, _Changes())
    tree[path[-1]] = value


def _apply(obj: Any, tree: _Changes) -> Any:
    changes = {k: _apply(getattr(obj, k), v) if isinstance(v, _Changes) else v for k, v in tree.items()}
    return dataclasses.replace(obj, **changes)


def to_flat(obj: Any) -> dict[str, Any]:
    """The settable leaves of `obj` by flat name (the inverse of `from_flat`)."""
    out = {}
    for leaf in flat_fields(type(obj)):
        value = obj
        for key in leaf.path:
            value = getattr(value, key)
        out[leaf.name] = value
    return out
