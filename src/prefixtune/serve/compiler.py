"""`PrefixAdapterCompiler`: reads adapter directories and compiles them to `PrefixKV` with the core API.

Validation (files, shapes, base-model fingerprint) is `PrefixModel.check_adapter_files`, the same as
offline loading; the parametrization is built from the folded tensors, compiled and dropped. The engine runs
`compile` on its own thread, between steps. Serving is stricter than offline loading (issue 10): an adapter
that records no base-model fingerprint (missing, {} or null: PEFT directories, hand-made files) is refused
unless the server allows unverified adapters, and a malformed fingerprint is always refused.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.errors import IncompatibleBaseModelError
from prefixtune.io.adapter_dir import AdapterFiles
from prefixtune.io.peft_import import read_adapter_files
from prefixtune.prefix_model import PrefixModel
from prefixtune.serve.registry import AdapterSpec


class PrefixAdapterCompiler:
    """Adapter directory -> `PrefixKV` for one frozen base model.

    Args:
        model: the served transformers model.
        dtype: dtype of the compiled prefixes (default: the model's).
        allow_unverified: serve adapters that record no base-model fingerprint (default False: refused).
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype | None = None, *, allow_unverified: bool = False) -> None:
        self.prefix_model = PrefixModel(model)
        self.allow_unverified = allow_unverified
        self.device = model.get_input_embeddings().weight.device
        self.dtype = dtype or model.get_input_embeddings().weight.dtype

    def inspect(self, path: Path) -> AdapterSpec:
        """Validate without compiling. Raises AdapterFormatError, IncompatibleBaseModelError."""
        files = read_adapter_files(path)  # ours or a PEFT directory
        self._check(files)
        return AdapterSpec(method=files.config.method, num_virtual_tokens=files.config.num_virtual_tokens)

    def compile(self, path: Path) -> PrefixKV:
        """Read and validate once, compile, detach; the parametrization is not kept."""
        files = read_adapter_files(path)  # ours or a PEFT directory
        cls = self._check(files)
        if files.compiled is not None:
            return files.compiled.detach().to(device=self.device, dtype=self.dtype)  # saved pre-compiled
        adapter = cls.from_folded(files.config, self.prefix_model.geometry, files.tensors).to(self.device)
        with torch.no_grad():
            kv = adapter.compile(self.prefix_model.base_model, self.prefix_model.base_fingerprint()).detach()
        return kv.to(device=self.device, dtype=self.dtype)

    def _check(self, files: AdapterFiles) -> type:
        """Shapes and fingerprint (`check_adapter_files`), after refusing a missing or malformed fingerprint."""
        recorded = files.fingerprint
        if not recorded:
            if not self.allow_unverified:
                raise IncompatibleBaseModelError(
                    f"adapter directory {files.path.name!r} records no base_model_fingerprint, so nothing shows it "
                    "was made for this base model; save it with prefixtune (or `prefixtune convert` a PEFT "
                    "adapter against its base model), or start the server with --allow-unverified-adapters"
                )
        elif not (
            isinstance(recorded, dict)
            and isinstance(recorded.get("architecture"), dict)
            and isinstance(recorded.get("weights_sha256"), str)
        ):
            raise IncompatibleBaseModelError(
                f"adapter directory {files.path.name!r} has a malformed base_model_fingerprint (expected an object "
                "with 'architecture' and 'weights_sha256'); save the adapter again with prefixtune"
            )
        return self.prefix_model.check_adapter_files(files)
