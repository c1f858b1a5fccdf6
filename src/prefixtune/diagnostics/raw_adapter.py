"""An adapter read raw for diagnosis: files parsed, values not judged.

One job: read a prefixtune or PEFT adapter directory into one neutral form (`RawAdapter`) without the
loader's value checks, because `doctor` must report NaN/Inf, unknown position conventions and wrong shapes
as findings, where the loader (`io.adapter_dir`) refuses them. Only structural damage (missing files, bad
JSON, unreadable safetensors) raises `AdapterFormatError`. Pickle files are never read.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from prefixtune.config import METHODS
from prefixtune.errors import AdapterFormatError
from prefixtune.io.adapter_dir import COMPILED_PREFIX, CONFIG_FILE, WEIGHTS_FILE
from prefixtune.io.peft_format import PREFIX_TUNING, is_peft_dir, read_peft_dir

_KV_NAME = re.compile(r"^(keys|values)\.(\d+)$")


@dataclass(frozen=True, slots=True)
class RawAdapter:
    """An adapter's recorded facts and trained tensors, unvalidated.

    Attributes:
        path: the directory.
        source: "prefixtune" or "peft".
        method: "prefix", "kv" or "prompt".
        num_virtual_tokens: m as recorded.
        position_convention: as recorded (may be one this version does not know).
        fingerprint: the recorded base-model fingerprint (None for PEFT adapters).
        tensors: the trained tensors under prefixtune's names ("prefix" (L, m, d); "keys.{l}"/"values.{l}"
            (H_kv, m, D); "prompt" (m, d)), as stored.
        extra: other stored tensors (compiled keys/values), checked for NaN/Inf only.
    """

    path: Path
    source: str
    method: str
    num_virtual_tokens: int
    position_convention: str
    fingerprint: dict[str, Any] | None
    tensors: dict[str, torch.Tensor]
    extra: dict[str, torch.Tensor]

    def kv_layer_count(self) -> int:
        """Method "kv": the number of layers the tensors cover (highest index + 1)."""
        indices = [int(match.group(2)) for name in self.tensors if (match := _KV_NAME.match(name))]
        return max(indices) + 1 if indices else 0

    def layers(self) -> list[torch.Tensor] | None:
        """Per-layer trained numbers (prefix: P^l; kv: keys and values flattened); None for a prompt."""
        if self.method == "prefix":
            return list(self.tensors["prefix"])
        if self.method == "kv":
            out = []
            for i in range(self.kv_layer_count()):
                parts = [self.tensors[n].flatten() for n in (f"keys.{i}", f"values.{i}") if n in self.tensors]
                out.append(torch.cat(parts) if parts else torch.zeros(0))
            return out
        return None


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
    if not isinstance(config, dict) or config.get("method") not in METHODS:
        raise AdapterFormatError(f"{file}: no valid 'config' object with a method among {', '.join(METHODS)}")
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
    )


def _check_names(file: Path, method: str, tensors: dict[str, torch.Tensor]) -> None:
    """The tensors a method stores are there with the right number of dimensions (values are not judged)."""
    if method == "kv":
        names = [n for n in tensors if _KV_NAME.match(n)]
        ok = bool(names) and len(names) == len(tensors) and all(tensors[n].ndim == 3 for n in names)
        expected = "keys.{l} and values.{l}, 3-D"
    else:
        name, ndim = ("prefix", 3) if method == "prefix" else ("prompt", 2)
        ok = set(tensors) == {name} and tensors[name].ndim == ndim
        expected = f"one {ndim}-D tensor {name!r}"
    if not ok:
        shapes = {k: tuple(v.shape) for k, v in list(tensors.items())[:6]}
        raise AdapterFormatError(f"{file}: method {method!r} stores {expected}, found {shapes}; the file is damaged")


def _read_peft(root: Path) -> RawAdapter:
    adapter = read_peft_dir(root)  # structure and shapes against its own config; values unjudged
    if adapter.peft_type == PREFIX_TUNING:
        keys, values = adapter.layer_kv()
        tensors = {f"keys.{i}": k for i, k in enumerate(keys)} | {f"values.{i}": v for i, v in enumerate(values)}
        method = "kv"
    else:
        tensors, method = {"prompt": adapter.embeddings}, "prompt"
    return RawAdapter(
        path=root,
        source="peft",
        method=method,
        num_virtual_tokens=adapter.num_virtual_tokens,
        position_convention="shifted",  # PEFT's only convention
        fingerprint=None,
        tensors=tensors,
        extra={},
    )
