"""The KV pack: a compiled prefix (`PrefixKV`) as one portable safetensors file, for any engine.

One job: write and read the file specified in docs/kv-pack.md. Tensors `keys.{l}` and `values.{l}` hold
layer l's keys and values, (num_key_value_heads, num_virtual_tokens, head_dim), exactly as that layer's
attention consumes them (norms, projections and rotary embedding already applied, at prefix positions
0..m-1 for compiled "prefix"/"prompt" adapters; "kv" adapters are trained directly in that space). The
safetensors header's string metadata records the pack version, layout, position convention, dtype, method
and the base-model fingerprint. Writing is atomic; reading validates everything. Depends on core only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.errors import AdapterFormatError
from prefixtune.io.atomic import atomic_file
from prefixtune.io.tensor_file import read_safetensors
from prefixtune.version import __version__

PACK_FORMAT = "prefixtune-kv-pack"
PACK_VERSION = 1
LAYOUT = "keys.{layer}, values.{layer}: (num_key_value_heads, num_virtual_tokens, head_dim)"
KEY_POSITIONS = "as consumed by attention: no rotation or norm is to be applied; prefix slot i is position i"
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# What each convention asks of an engine, written into the pack so it is self-describing.
CONVENTIONS: dict[str, str] = {
    "shifted": "real token j (0-based, padding not counted) has position num_virtual_tokens + j",
}


@dataclass(frozen=True, slots=True)
class KVPack:
    """A KV pack as read back: the prefix and the header metadata (values decoded from JSON where they are)."""

    prefix_kv: PrefixKV
    metadata: dict[str, Any]


def write_kv_pack(
    kv: PrefixKV,
    path: str | os.PathLike,
    *,
    dtype: str = "float32",
    adapter_name: str | None = None,
) -> Path:
    """Write `kv` as a KV pack file (atomically: a temporary name, then a rename).

    Args:
        kv: the compiled prefix (`PrefixModel.compile(name)`); detached and moved to the CPU here.
        path: the .safetensors file to write.
        dtype: "float32", "float16" or "bfloat16"; the tensors are cast to it.
        adapter_name: recorded for the reader's information.

    Returns:
        `path` as a Path.

    Raises:
        AdapterFormatError: an unknown dtype, or a position convention this format does not describe.
    """
    if dtype not in DTYPES:
        raise AdapterFormatError(f"dtype {dtype!r} is not supported in a KV pack; choose one of {', '.join(DTYPES)}")
    if kv.position_convention not in CONVENTIONS:
        raise AdapterFormatError(
            f"position convention {kv.position_convention!r} has no KV pack description; known: {sorted(CONVENTIONS)}"
        )
    tensors: dict[str, torch.Tensor] = {}
    for i, (k, v) in enumerate(zip(kv.keys, kv.values, strict=True)):
        tensors[f"keys.{i}"] = k.detach().to("cpu", DTYPES[dtype]).contiguous()
        tensors[f"values.{i}"] = v.detach().to("cpu", DTYPES[dtype]).contiguous()
    target = Path(path)
    with atomic_file(target) as tmp:
        save_file(tensors, str(tmp), metadata=_header(kv, dtype, adapter_name))
    return target


def read_kv_pack(path: str | os.PathLike) -> KVPack:
    """Read and validate a KV pack.

    Raises:
        AdapterFormatError: missing or corrupt file, not a KV pack, an unknown pack version, missing layers.
    """
    file = Path(path)
    if not file.is_file():
        raise AdapterFormatError(f"{file}: no such KV pack file")
    tensors, header = read_safetensors(file)
    metadata = _decode(file, header)
    L = metadata["num_layers"]
    try:
        keys = tuple(tensors[f"keys.{i}"] for i in range(L))
        values = tuple(tensors[f"values.{i}"] for i in range(L))
        kv = PrefixKV(
            keys,
            values,
            method=metadata["method"],
            position_convention=metadata["position_convention"],
            fingerprint=metadata.get("base_model_fingerprint"),
        )
    except (KeyError, ValueError) as exc:
        raise AdapterFormatError(f"{file}: layers are missing or malformed ({exc}); re-export the pack") from None
    return KVPack(prefix_kv=kv, metadata=metadata)


def _header(kv: PrefixKV, dtype: str, adapter_name: str | None) -> dict[str, str]:
    """The safetensors header metadata (string values; structured ones as JSON)."""
    return {
        "format": "pt",
        "pack_format": PACK_FORMAT,
        "pack_version": str(PACK_VERSION),
        "producer": f"prefixtune {__version__}",
        "adapter_name": adapter_name or "",
        "method": kv.method,
        "num_layers": str(kv.num_layers),
        "num_virtual_tokens": str(kv.num_virtual_tokens),
        "kv_shapes": json.dumps([[int(k.shape[0]), int(k.shape[2])] for k in kv.keys]),
        "dtype": dtype,
        "layout": LAYOUT,
        "key_positions": KEY_POSITIONS,
        "position_convention": kv.position_convention,
        "real_token_positions": CONVENTIONS[kv.position_convention],
        "base_model_fingerprint": json.dumps(kv.fingerprint, sort_keys=True),
    }


def _decode(file: Path, header: dict[str, str]) -> dict[str, Any]:
    if header.get("pack_format") != PACK_FORMAT:
        raise AdapterFormatError(f"{file}: not a prefixtune KV pack (no pack_format={PACK_FORMAT!r} in its header)")
    if header.get("pack_version") != str(PACK_VERSION):
        raise AdapterFormatError(
            f"{file}: KV pack version {header.get('pack_version')!r} is not supported by prefixtune {__version__} "
            f"(it reads version {PACK_VERSION}; written by {header.get('producer', 'unknown')}); upgrade prefixtune"
        )
    try:
        out: dict[str, Any] = dict(header)
        out["pack_version"] = int(header["pack_version"])
        out["num_layers"] = int(header["num_layers"])
        out["num_virtual_tokens"] = int(header["num_virtual_tokens"])
        out["kv_shapes"] = json.loads(header["kv_shapes"])
        out["base_model_fingerprint"] = json.loads(header.get("base_model_fingerprint") or "null")
    except (KeyError, ValueError) as exc:
        raise AdapterFormatError(f"{file}: KV pack header is incomplete or malformed ({exc})") from None
    return out
