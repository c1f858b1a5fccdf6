"""`VllmAdapterCompiler`: adapter directories -> KV packs in the connector's `kv_root`, for the registry.

One job: what `serve/compiler.py` does for the built-in engine, but the result lives in a file the vLLM
workers read (`addressing.pack_path`), not in this process's memory. Validation (files, shapes, NaN/Inf,
base-model fingerprint) is the built-in engine's, so both engines accept and refuse the same adapters.

An adapter directory may also hold just a KV pack (`prefixtune export-kv ADAPTER DIR/NAME.kv.safetensors`, no
adapter_config.json): it is checked against the base model (fingerprint, layers, shapes, NaN/Inf, position
convention) and served as it is; no base-model forward is needed for it, or for adapters saved with
`save_adapter(..., include_compiled=True)`.

Pack ids are content-addressed: `pt-` + sha256 over the adapter's files and the base model's weights hash.
A changed adapter therefore gets a new id (a new prefix-cache salt, a new device-store entry) and can never
meet stale blocks; an unchanged one that was evicted from the registry's LRU is not compiled again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from prefixtune.core.fingerprint import compare
from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.errors import AdapterFormatError, IncompatibleBaseModelError
from prefixtune.io.kv_pack import read_kv_pack, write_kv_pack
from prefixtune.serve.adapter_digest import adapter_digest
from prefixtune.serve.compiler import PrefixAdapterCompiler
from prefixtune.serve.registry import AdapterSpec
from prefixtune.vllm.addressing import PACK_SUFFIX, pack_path
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
        pack = _lone_pack(path)
        if pack is not None:
            kv = self._checked_pack(pack)
            return AdapterSpec(method=kv.method, num_virtual_tokens=kv.num_virtual_tokens)
        return self.inner.inspect(path)

    def compile(self, path: Path) -> VllmAdapter:
        """The adapter's pack (written once per content; atomic). Raises as `inspect`."""
        adapter_id = self.adapter_id(path)
        target = pack_path(self.kv_root, adapter_id)
        if not target.is_file():
            pack = _lone_pack(path)
            kv = self._checked_pack(pack) if pack is not None else self.inner.compile(path)
            write_kv_pack(kv, target, dtype=self.dtype, adapter_name=path.name)
        m = read_num_virtual_tokens(self.kv_root, adapter_id)
        # the pack's size stands for its device bytes (the header is a few KiB): the registry's budget counts it
        return VllmAdapter(adapter_id, m, target.stat().st_size)

    def adapter_id(self, path: Path) -> str:
        """`pt-` + sha256(adapter files, base weights hash), 40 hex digits."""
        digest = hashlib.sha256(adapter_digest(path, path).encode())
        digest.update(self.inner.prefix_model.base_fingerprint()["weights_sha256"].encode())
        digest.update(self.dtype.encode())
        return "pt-" + digest.hexdigest()[:40]

    def _checked_pack(self, pack: Path) -> PrefixKV:
        """A KV pack checked as an adapter directory is: fingerprint, layers and shapes, values, convention."""
        kv = read_kv_pack(pack).prefix_kv
        where = f"KV pack {pack.parent.name}/{pack.name}"
        if not kv.fingerprint and not self.inner.allow_unverified:
            raise IncompatibleBaseModelError(
                f"{where} records no base_model_fingerprint; export it with `prefixtune export-kv` on its base "
                "model, or start the server with --allow-unverified-adapters"
            )
        problems = compare(kv.fingerprint, self.inner.prefix_model.base_fingerprint()) if kv.fingerprint else []
        if problems:
            raise IncompatibleBaseModelError(f"{where} was made for another base model: {'; '.join(problems)}")
        want = self.inner.prefix_model.geometry.kv_shapes
        got = tuple((int(k.shape[0]), int(k.shape[2])) for k in kv.keys)
        if got != tuple(want) or any(v.shape != k.shape for k, v in zip(kv.keys, kv.values, strict=True)):
            raise AdapterFormatError(f"{where}: per-layer (H_kv, D) {got} do not fit the model's {tuple(want)}")
        if not all(bool(torch.isfinite(t).all()) for t in (*kv.keys, *kv.values)):
            raise AdapterFormatError(f"{where} holds NaN/Inf values; the adapter is broken")
        if kv.position_convention != "shifted":
            raise AdapterFormatError(f"{where}: position convention {kv.position_convention!r} is not 'shifted'")
        return kv


def _lone_pack(path: Path) -> Path | None:
    """The KV pack of a directory that holds one and no adapter config (an adapter shipped compiled)."""
    if (path / "adapter_config.json").exists():
        return None
    packs = sorted(path.glob(f"*{PACK_SUFFIX}"))
    return packs[0] if len(packs) == 1 else None
