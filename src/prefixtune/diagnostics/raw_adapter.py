"""An adapter read raw for diagnosis: files parsed, values not judged.

One job: read a prefixtune or PEFT adapter directory into one neutral form (`RawAdapter`) without the
loader's value checks, because `doctor` must report NaN/Inf, unknown position conventions and wrong shapes
as findings, where the loader (`io.adapter_dir`) refuses them. Only structural damage (missing files, bad
JSON, unreadable safetensors) raises `AdapterFormatError`. Pickle files are never read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from prefixtune.errors import AdapterFormatError
from prefixtune.io.adapter_dir import COMPILED_PREFIX, CONFIG_FILE, HEAD_FILE, WEIGHTS_FILE
from prefixtune.io.peft_format import PEFT_POSITION_CONVENTION, is_peft_dir, read_peft_dir
from prefixtune.io.peft_import import method_for_peft_type
from prefixtune.parametrizations import is_registered, parametrization_class, registered_methods
from prefixtune.parametrizations.base import Parametrization


@dataclass(frozen=True, slots=True)
class RawAdapter:
    """An adapter's recorded facts and trained tensors, unvalidated.

    Attributes:
        path: the directory.
        source: "prefixtune" or "peft".
        method: a registered method ("prefix", "kv", "prompt", ...).
        num_virtual_tokens: m as recorded.
        position_convention: as recorded (may be one this version does not know).
        fingerprint: the recorded base-model fingerprint (None for PEFT adapters).
        tensors: the trained tensors under the method's names (`Parametrization.expected_shapes`), as stored.
        extra: other stored tensors (compiled keys/values), checked for NaN/Inf only.
        head: the adapter's own task head (`train_head`, head.safetensors) by model parameter names, or None.
        sites: encoder-decoder adapters: the attention sites it covers as recorded (None: all three, or a
            decoder-only adapter).
        head_pooling: what its own head reads, as recorded ("model": a copy of the model's head; "mean").
    """

    path: Path
    source: str
    method: str
    num_virtual_tokens: int
    position_convention: str
    fingerprint: dict[str, Any] | None
    tensors: dict[str, torch.Tensor]
    extra: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor] | None = None
    sites: tuple[str, ...] | None = None
    head_pooling: str = "model"

    @property
    def method_class(self) -> type[Parametrization]:
        """The method's parametrization class, which answers every method-specific question."""
        return parametrization_class(self.method)

    def layers(self) -> list[torch.Tensor] | None:
        """Per-layer trained numbers, flattened (the method's `layer_views`); None for a method that trains
        nothing per layer (a prompt)."""
        return self.method_class.layer_views(self.tensors)


def read_raw_adapter(path: str | os.PathLike) -> RawAdapter:
    """Read a prefixtune or PEFT adapter directory without judging its values.

    Raises:
        AdapterFormatError: the directory, its config or its weights cannot be read at all.
    """
    root = Path(path)
    if not root.is_dir():
        raise AdapterFormatError(f"{root}: no such adapter directory")
    if is_peft_dir(root):
        return _read_peft(root)
    return _read_ours(root)


def _read_ours(root: Path) -> RawAdapter:
    file = root / CONFIG_FILE
    try:
        document = json.loads(file.read_text())
    except FileNotFoundError:
        raise AdapterFormatError(f"{file}: missing; an adapter directory needs {CONFIG_FILE}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterFormatError(f"{file}: not valid JSON ({exc})") from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict) or not is_registered(config.get("method")):
        raise AdapterFormatError(
            f"{file}: no valid 'config' object with a method among {', '.join(registered_methods())}"
        )
    weights = root / WEIGHTS_FILE
    try:
        stored = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise AdapterFormatError(f"{weights}: cannot be read, missing, truncated or corrupt ({exc})") from None
    tensors = {k: v for k, v in stored.items() if not k.startswith(COMPILED_PREFIX)}
    _check_names(weights, config["method"], tensors)
    return RawAdapter(
        path=root,
        source="prefixtune",
        method=config["method"],
        num_virtual_tokens=int(config.get("num_virtual_tokens") or 0),
        position_convention=str(config.get("position_convention", "shifted")),
        fingerprint=document.get("base_model_fingerprint"),
        tensors=tensors,
        extra={k: v for k, v in stored.items() if k.startswith(COMPILED_PREFIX)},
        head=_read_head(root) if config.get("train_head") else None,
        sites=tuple(config["sites"]) if isinstance(config.get("sites"), list) else None,
        head_pooling=str(config.get("head_pooling", "model")),
    )


def _read_head(root: Path) -> dict[str, torch.Tensor]:
    file = root / HEAD_FILE
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise AdapterFormatError(
            f"{file}: cannot be read, missing, truncated or corrupt ({exc}); the adapter trains its task head"
        ) from None


def _check_names(file: Path, method: str, tensors: dict[str, torch.Tensor]) -> None:
    """The tensors a method stores are there with the right number of dimensions (values are not judged)."""
    problem = parametrization_class(method).layout_problem(tensors)
    if problem is not None:
        shapes = {k: tuple(v.shape) for k, v in list(tensors.items())[:6]}
        raise AdapterFormatError(f"{file}: method {method!r} {problem}, found {shapes}; the file is damaged")


def _read_peft(root: Path) -> RawAdapter:
    adapter = read_peft_dir(root)  # structure and shapes against its own config; values unjudged
    cls = method_for_peft_type(adapter.peft_type)
    return RawAdapter(
        path=root,
        source="peft",
        method=cls.method,
        num_virtual_tokens=adapter.num_virtual_tokens,
        position_convention=PEFT_POSITION_CONVENTION,  # PEFT's only convention
        fingerprint=None,
        tensors=cls.tensors_from_peft(adapter),
        extra={},
    )
