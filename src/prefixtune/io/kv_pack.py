"""The KV pack: a compiled prefix (`PrefixKV`) as one portable safetensors file, for any engine.

One job: write and read the file specified in docs/kv-pack.md. Tensors `keys.{l}` and `values.{l}` hold
layer l's keys and values, (num_key_value_heads, num_virtual_tokens, head_dim), exactly as that layer's
attention consumes them (norms, projections and rotary embedding already applied, at prefix positions
0..m-1 for compiled "prefix"/"prompt" adapters; "kv" adapters are trained directly in that space). The
safetensors header's string metadata records the pack version, layout, position convention, dtype, method
and the base-model fingerprint, and from version 2 the attention site of every entry (encoder-decoders:
encoder, decoder, cross; `core.hf.seq2seq`). Writing is atomic; reading validates everything. Depends on core only.
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
# Version 2 (issue 12) adds `sites`: the attention site of every entry of an encoder-decoder's pack. A
# decoder-only pack is still written as version 1, unchanged, so version-1 readers keep reading it.
PACK_VERSION = 2
READ_VERSIONS: tuple[int, ...] = (1, 2)
SITES_DESCRIPTION = (
    "per entry l of keys/values, its attention site: encoder (encoder self-attention), decoder (decoder "
    "self-attention) or cross (cross-attention: prepend to the keys/values of the encoder outputs); entries "
    "of one site are that site's layers in order"
)
LAYOUT = "keys.{layer}, values.{layer}: (num_key_value_heads, num_virtual_tokens, head_dim)"
KEY_POSITIONS = "as consumed by attention: no rotation or norm is to be applied; prefix slot i is position i"
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# What each convention asks of an engine, written into the pack so it is self-describing.
CONVENTIONS: dict[str, str] = {
    "shifted": "real token j (0-based, padding not counted) has position num_virtual_tokens + j",
    "unshifted": "real token j keeps the position it has without a prefix; the prefix slots have no position",
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
    if kv.is_prompt:
        raise AdapterFormatError(
            "this adapter is a soft prompt on an encoder: its keys/values depend on each input, so it has no "
            "per-layer KV pack; keep the adapter directory (prefixtune serves it from there)"
        )
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
            sites=metadata.get("sites"),
        )
    except (KeyError, ValueError) as exc:
        raise AdapterFormatError(f"{file}: layers are missing or malformed ({exc}); re-export the pack") from None
    return KVPack(prefix_kv=kv, metadata=metadata)


def _header(kv: PrefixKV, dtype: str, adapter_name: str | None) -> dict[str, str]:
    """The safetensors header metadata (string values; structured ones as JSON)."""
    sites = {} if kv.sites is None else {"sites": json.dumps(list(kv.sites)), "sites_meaning": SITES_DESCRIPTION}
    return sites | {
        "format": "pt",
        "pack_format": PACK_FORMAT,
        "pack_version": "1" if kv.sites is None else str(PACK_VERSION),
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
    if header.get("pack_version") not in {str(v) for v in READ_VERSIONS}:
        raise AdapterFormatError(
            f"{file}: KV pack version {header.get('pack_version')!r} is not supported by prefixtune {__version__} "
            f"(it reads versions {', '.join(map(str, READ_VERSIONS))}; written by "
            f"{header.get('producer', 'unknown')}); upgrade prefixtune"
        )
    try:
        out: dict[str, Any] = dict(header)
        out["pack_version"] = int(header["pack_version"])
        out["num_layers"] = int(header["num_layers"])
        out["num_virtual_tokens"] = int(header["num_virtual_tokens"])
        out["kv_shapes"] = json.loads(header["kv_shapes"])
        out["base_model_fingerprint"] = json.loads(header.get("base_model_fingerprint") or "null")
        if out["pack_version"] >= 2:  # version 2: the sites of an encoder-decoder's pack
            out["sites"] = tuple(json.loads(header["sites"]))
    except (KeyError, ValueError) as exc:
        raise AdapterFormatError(f"{file}: KV pack header is incomplete or malformed ({exc})") from None
    return out
