"""The prefixtune adapter directory: `adapter_config.json` + `adapter.safetensors`.

adapter_config.json holds the format version, the library version, the PrefixConfig, the geometry it was
made for, the base-model fingerprint and free-form metadata (the training task format, for example).
adapter.safetensors holds the trained tensors with any reparametrization folded away, and optionally the
compiled per-layer keys/values ("compiled.keys.{l}", "compiled.values.{l}"). An adapter that trains its own
task head (`train_head`, encoders) also holds head.safetensors: the head's weights by their names in the model
("classifier.weight", ...); adapter_config.json lists their shapes under "head".

Reading validates everything before anything is built: a bad directory raises `AdapterFormatError` naming
the file and the problem. Writing is atomic. Pickle files are never read.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from prefixtune.config import PrefixConfig
from prefixtune.core.geometry import ModelGeometry
from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.errors import AdapterFormatError, ConfigError
from prefixtune.io.atomic import atomic_directory
from prefixtune.io.tensor_file import read_safetensors
from prefixtune.version import __version__

FORMAT_VERSION = 1
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter.safetensors"
HEAD_FILE = "head.safetensors"
COMPILED_PREFIX = "compiled."


@dataclass
class AdapterFiles:
    """The validated contents of an adapter directory."""

    path: Path
    config: PrefixConfig
    tensors: dict[str, torch.Tensor]
    fingerprint: dict[str, Any] | None
    metadata: dict[str, Any] = field(default_factory=dict)
    compiled: PrefixKV | None = None
    raw_config: dict[str, Any] = field(default_factory=dict)
    weights_file: str = WEIGHTS_FILE  # named in errors (PEFT's is adapter_model.safetensors)
    head: dict[str, torch.Tensor] | None = None  # the adapter's own task head (train_head), by model names


def save_adapter_dir(
    path: str | os.PathLike,
    *,
    config: PrefixConfig,
    tensors: dict[str, torch.Tensor],
    geometry: ModelGeometry,
    fingerprint: dict[str, Any] | None,
    metadata: dict[str, Any] | None = None,
    compiled: PrefixKV | None = None,
    head: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write an adapter directory atomically (the old one, if any, is replaced only on success).

    `head`: the adapter's own task-head weights by their names in the model (written to head.safetensors).
    """
    payload = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    if compiled is not None and compiled.is_prompt:
        compiled = None  # an encoder's prompt compiles to itself: nothing more to store
    if compiled is not None:
        for i, (k, v) in enumerate(zip(compiled.keys, compiled.values, strict=True)):
            payload[f"{COMPILED_PREFIX}keys.{i}"] = k.detach().to("cpu").clone(memory_format=torch.contiguous_format)
            payload[f"{COMPILED_PREFIX}values.{i}"] = v.detach().to("cpu").clone(memory_format=torch.contiguous_format)
    document = {
        "format_version": FORMAT_VERSION,
        "prefixtune_version": __version__,
        "method": config.method,
        "num_virtual_tokens": config.num_virtual_tokens,
        "position_convention": config.position_convention,
        "config": config.to_dict(),
        "num_layers": geometry.num_layers,
        "hidden_size": geometry.hidden_size,
        "kv_shapes": [list(s) for s in geometry.kv_shapes],
        **({"slot_sites": list(geometry.sites)} if geometry.sites else {}),  # encoder-decoders: each slot's site
        "num_parameters": sum(t.numel() for k, t in tensors.items()),
        "base_model_fingerprint": fingerprint,
        "metadata": metadata or {},
        "tensors": {k: list(v.shape) for k, v in payload.items()},
    }
    if head is not None:
        document["head"] = {k: list(v.shape) for k, v in head.items()}
    with atomic_directory(path) as tmp:
        save_file(payload, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "prefixtune_format": "1"})
        if head is not None:
            head_payload = {k: v.detach().to("cpu").contiguous() for k, v in head.items()}
            save_file(head_payload, str(tmp / HEAD_FILE), metadata={"format": "pt", "prefixtune_format": "1"})
        (tmp / CONFIG_FILE).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return Path(path)


def read_adapter_dir(path: str | os.PathLike) -> AdapterFiles:
    """Read and validate an adapter directory (shapes against a model are checked by `check_shapes`).

    Raises:
        AdapterFormatError: missing directory or files, invalid JSON, unknown format version or method,
            truncated or corrupt safetensors, NaN/Inf values.
    """
    root = Path(path)
    if not root.is_dir():
        raise AdapterFormatError(f"{root}: no such adapter directory")
    document = _read_config_json(root / CONFIG_FILE)
    config = _parse_config(root / CONFIG_FILE, document)
    tensors = _read_tensors(root / WEIGHTS_FILE)
    compiled = _split_compiled(tensors, config)
    head = _read_head(root, config)
    return AdapterFiles(
        path=root,
        config=config,
        tensors=tensors,
        fingerprint=document.get("base_model_fingerprint"),
        metadata=document.get("metadata") or {},
        compiled=compiled,
        raw_config=document,
        head=head,
    )


def _read_head(root: Path, config: PrefixConfig) -> dict[str, torch.Tensor] | None:
    """head.safetensors, which an adapter with `train_head` must have and any other must not."""
    file = root / HEAD_FILE
    if config.train_head and not file.is_file():
        raise AdapterFormatError(f"{file}: missing; the adapter trains its task head (train_head) and saves it there")
    if not config.train_head:
        if file.is_file():
            raise AdapterFormatError(f"{file}: present, but the adapter's config says train_head=false")
        return None
    return _read_tensors(file)


def check_head_shapes(files: AdapterFiles, model_shapes: dict[str, tuple[int, ...]], *, exact: bool = False) -> None:
    """Raise AdapterFormatError unless every saved head tensor is a parameter of the model, of its shape
    (`exact`: and every one of `model_shapes` is saved, as a mean-pooling head's tensors must be)."""
    file = files.path / HEAD_FILE
    missing = sorted(set(model_shapes) - set(files.head or {})) if exact else []
    if missing:
        pooling = files.config.head_pooling
        raise AdapterFormatError(f"{file}: head tensors {missing} are missing (head_pooling={pooling!r})")
    for name, tensor in (files.head or {}).items():
        shape = model_shapes.get(name)
        if shape is None:
            raise AdapterFormatError(
                f"{file}: head tensor {name!r} is not a parameter of this model (was it made for another head?)"
            )
        if tuple(tensor.shape) != shape:
            raise AdapterFormatError(
                f"{file}: head tensor {name!r} has shape {tuple(tensor.shape)}, but this model's is {shape} "
                "(another number of labels?)"
            )


def check_shapes(files: AdapterFiles, expected: dict[str, tuple[int, ...]]) -> None:
    """Raise AdapterFormatError unless the tensors are exactly the expected names and shapes."""
    weights = files.path / files.weights_file
    missing = sorted(set(expected) - set(files.tensors))
    extra = sorted(set(files.tensors) - set(expected))
    if missing or extra:
        raise AdapterFormatError(
            f"{weights}: tensors do not match method {files.config.method!r} on this model "
            f"(missing {missing[:4]}, unexpected {extra[:4]})"
        )
    for name, shape in expected.items():
        got = tuple(files.tensors[name].shape)
        if got != tuple(shape):
            raise AdapterFormatError(
                f"{weights}: tensor {name!r} has shape {got}, but this model needs {tuple(shape)} "
                "(was the adapter made for another base model?)"
            )


def _read_config_json(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise AdapterFormatError(f"{file}: missing; an adapter directory needs {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        document = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterFormatError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise AdapterFormatError(f"{file}: expected a JSON object, got {type(document).__name__}")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise AdapterFormatError(
            f"{file}: format_version {version!r} is not supported by prefixtune {__version__} "
            f"(it reads format_version {FORMAT_VERSION}; written by prefixtune "
            f"{document.get('prefixtune_version', 'unknown')}); upgrade prefixtune or re-export the adapter"
        )
    return document


def _parse_config(file: Path, document: dict[str, Any]) -> PrefixConfig:
    raw = document.get("config")
    if not isinstance(raw, dict):
        raise AdapterFormatError(f"{file}: missing the 'config' object")
    # Every writer records the method and init; a config without them predates `kv` and 'auto' as the
    # defaults and meant what the defaults were then.
    raw = {"method": "prefix", "init": "vocab", **raw}
    try:
        return PrefixConfig.from_dict(raw)
    except ConfigError as exc:
        raise AdapterFormatError(f"{file}: {exc}") from None
    except TypeError as exc:
        raise AdapterFormatError(f"{file}: bad config ({exc})") from None


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise AdapterFormatError(f"{file}: missing; an adapter directory needs {CONFIG_FILE} and {WEIGHTS_FILE}")
    tensors, _ = read_safetensors(file)
    for name, tensor in tensors.items():
        if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise AdapterFormatError(f"{file}: tensor {name!r} holds {bad} NaN/Inf values; the adapter is broken")
    return tensors


def _split_compiled(tensors: dict[str, torch.Tensor], config: PrefixConfig) -> PrefixKV | None:
    names = [k for k in tensors if k.startswith(COMPILED_PREFIX)]
    if not names:
        return None
    compiled = {k[len(COMPILED_PREFIX) :]: tensors.pop(k) for k in names}
    L = math.ceil(len(compiled) / 2)
    try:
        keys = tuple(compiled[f"keys.{i}"] for i in range(L))
        values = tuple(compiled[f"values.{i}"] for i in range(L))
        return PrefixKV(keys, values, method=config.method, position_convention=config.position_convention)
    except (KeyError, ValueError) as exc:
        raise AdapterFormatError(f"compiled keys/values are incomplete or malformed ({exc})") from None
