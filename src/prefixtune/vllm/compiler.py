"""`VllmAdapterCompiler`: adapter directories -> KV packs in the connector's `kv_root`, for the registry.

One job: what `serve/compiler.py` does for the built-in engine, but the result lives in a file the vLLM
workers read (`addressing.pack_path`), not in this process's memory. Validation (files, shapes, NaN/Inf,
base-model fingerprint) is the built-in engine's, so both engines accept and refuse the same adapters.

Pack ids are content-addressed: `pt-` + sha256 over the adapter's files and the base model's weights hash.
A changed adapter therefore gets a new id (a new prefix-cache salt, a new device-store entry) and can never
meet stale blocks; an unchanged one that was evicted from the registry's LRU is not compiled again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from prefixtune.io.kv_pack import write_kv_pack
from prefixtune.serve.adapter_digest import adapter_digest
from prefixtune.serve.compiler import PrefixAdapterCompiler
from prefixtune.serve.registry import AdapterSpec
from prefixtune.vllm.addressing import pack_path
from prefixtune.vllm.device_store import read_num_virtual_tokens


@dataclass(frozen=True, slots=True)
class VllmAdapter:
    """A compiled adapter as the vLLM engine addresses it (what the registry caches).

    Attributes:
        adapter_id: the pack's id in `kv_root` (also the prefix-cache salt).
        num_virtual_tokens: m, the placeholders its requests carry.
        nbytes: what its keys/values take on the device (the registry's LRU budget counts this).
    """

    adapter_id: str
    num_virtual_tokens: int
    nbytes: int


class VllmAdapterCompiler:
    """Reads, validates and compiles adapter directories into KV packs under `kv_root`.

    Args:
        model: the base model as transformers loads it (fingerprint, compiling `prefix`/`prompt` adapters).
        kv_root: the connector's pack directory (created if missing).
        dtype: dtype of the packs ("float32", "float16", "bfloat16"); workers cast to the cache's dtype.
        allow_unverified: serve adapters that record no base-model fingerprint (default False: refused).
    """

    def __init__(
        self, model: nn.Module, kv_root: str | Path, dtype: str = "float32", *, allow_unverified: bool = False
    ) -> None:
        self.inner = PrefixAdapterCompiler(model, allow_unverified=allow_unverified)
        self.kv_root = Path(kv_root)
        self.kv_root.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype

    def inspect(self, path: Path) -> AdapterSpec:
        """Validate without compiling. Raises AdapterFormatError, IncompatibleBaseModelError."""
        return self.inner.inspect(path)

    def compile(self, path: Path) -> VllmAdapter:
        """The adapter's pack (written once per content; atomic). Raises as `inspect`."""
        adapter_id = self.adapter_id(path)
        target = pack_path(self.kv_root, adapter_id)
        if not target.is_file():
            kv = self.inner.compile(path)
            write_kv_pack(kv, target, dtype=self.dtype, adapter_name=path.name)
        m = read_num_virtual_tokens(self.kv_root, adapter_id)
        return VllmAdapter(adapter_id, m, _pack_tensor_bytes(target))

    def adapter_id(self, path: Path) -> str:
        """`pt-` + sha256(adapter files, base weights hash), 40 hex digits."""
        digest = hashlib.sha256(adapter_digest(path, path).encode())
        digest.update(self.inner.prefix_model.base_fingerprint()["weights_sha256"].encode())
        digest.update(self.dtype.encode())
        return "pt-" + digest.hexdigest()[:40]


def _pack_tensor_bytes(path: Path) -> int:
    """The tensor bytes of a pack (its file size less the small header is close enough for a budget)."""
    return path.stat().st_size
