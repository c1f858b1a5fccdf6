"""Flags from config dataclasses, and the defaults < config file < flags precedence.

One job: turn the fields of a config dataclass (`TrainConfig`, `PrefixConfig`) into argparse flags whose
help is the field's help string, so a flag and a field are one thing, and merge a TOML config file under the
flags the user typed. A config made of sections (`ServeConfig`) gives one flag per leaf field, by its flat
name (`prefixtune.config_sections`). Depends on argparse, tomllib, `prefixtune.config_sections` and
`prefixtune.errors`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prefixtune.config_sections import flat_fields
from prefixtune.errors import ConfigError


def parse_mapping(text: str) -> dict[str, str]:
    """Parse `label=word,label=word` or a JSON object (or `@file.json`) into a dict of strings.

    Words keep their spaces: `positive=' great'` is `{"positive": " great"}` once the shell strips quotes,
    so pass `--verbalizer 'positive= great,negative= awful'` or JSON.
    """
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise argparse.ArgumentTypeError(f"not a JSON object: {exc.msg}") from None
        return {str(k): str(v) for k, v in value.items()}
    out = {}
    for item in text.split(","):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"expected label=word pairs separated by commas, got {item!r}")
        key, word = item.split("=", 1)
        out[key.strip()] = word
    return out


def _optional(parse: Any) -> Any:
    def convert(text: str) -> Any:
        return None if text.lower() in ("none", "null") else parse(text)

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


_PARSERS = {"int": int, "float": float, "str": str, "dict[str, str]": parse_mapping}


def _flag_kwargs(f: dataclasses.Field, name: str) -> dict[str, Any]:
    annotation = str(f.type)
    optional = annotation.endswith("| None")
    base = annotation.removesuffix("| None").strip()
    help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
    kwargs: dict[str, Any] = {"help": help_text, "default": argparse.SUPPRESS}
    if base == "bool":
        kwargs["action"] = argparse.BooleanOptionalAction
        return kwargs
    parse = _PARSERS.get(base, str)
    kwargs["type"] = _optional(parse) if optional else parse
    kwargs["metavar"] = name.upper()
    return kwargs


def add_dataclass_flags(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    dest_prefix: str = "",
    choices: dict[str, Iterable[str]] | None = None,
) -> None:
    """Add one `--field-name` flag per dataclass field (defaults suppressed: only typed flags are set).

    Args:
        parser: the parser or argument group.
        cls: the config dataclass (sections give one flag per leaf, by flat name).
        exclude: field names to leave out.
        dest_prefix: prefix of the namespace attribute (keeps two dataclasses' fields apart).
        choices: allowed values per field name.
    """
    skip = set(exclude)
    for leaf in flat_fields(cls):
        name, f = leaf.name, leaf.field
        if name in skip:
            continue
        kwargs = _flag_kwargs(f, name)
        if choices and name in choices:
            kwargs["choices"] = list(choices[name])
            kwargs.pop("metavar", None)
        default = f.default if f.default is not dataclasses.MISSING else None
        if default not in (None, "") and kwargs.get("action") is None:
            kwargs["help"] += f" (default: {default})"
        parser.add_argument("--" + name.replace("_", "-"), dest=dest_prefix + name, **kwargs)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file (`[train]`-level keys at the top, adapter keys under `[adapter]`)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist")
    try:
        return tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from None


def collect(namespace: argparse.Namespace, cls: type, file_values: dict[str, Any], dest_prefix: str = "") -> dict:
    """Field values for `cls` by flat name: the config file's, overridden by flags present in `namespace`.

    Raises:
        ConfigError: the config file names keys that are not fields of `cls`.
    """
    names = {leaf.name for leaf in flat_fields(cls)}
    unknown = sorted(k for k, v in file_values.items() if k not in names and not isinstance(v, dict))
    if unknown:
        raise ConfigError(f"unknown keys {unknown} for {cls.__name__}; known keys are {sorted(names)}")
    values = {k: v for k, v in file_values.items() if k in names}
    for name in names:
        if hasattr(namespace, dest_prefix + name):
            values[name] = getattr(namespace, dest_prefix + name)
    return values
