"""`PrefixAdapterCompiler`: reads adapter directories and compiles them to `PrefixKV` with the core API.

Uses one `PrefixModel` over the served base model: load the directory under a temporary name (validating
files, shapes and the base-model fingerprint), compile, detach, remove. Compiling runs the frozen model
(and, for method "prefix", hooks its layers), so `compile` must not run concurrently with the engine's
forward passes: the engine runs it on its own thread, between steps.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import torch
from torch import nn

from prefixtune.core.fingerprint import compare
from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.errors import IncompatibleBaseModelError
from prefixtune.io.adapter_dir import check_shapes
from prefixtune.io.peft_import import read_adapter_files
from prefixtune.parametrizations.registry import parametrization_class
from prefixtune.prefix_model import PrefixModel
from prefixtune.serve.registry import AdapterSpec


class PrefixAdapterCompiler:
    """Adapter directory -> `PrefixKV` for one frozen base model.

    Args:
        model: the served transformers model.
        dtype: dtype of the compiled prefixes (default: the model's).
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype | None = None) -> None:
        self.prefix_model = PrefixModel(model)
        self.device = model.get_input_embeddings().weight.device
        self.dtype = dtype or model.get_input_embeddings().weight.dtype
        self._lock = threading.Lock()
        self._counter = itertools.count()

    def inspect(self, path: Path) -> AdapterSpec:
        """Validate without compiling. Raises AdapterFormatError, IncompatibleBaseModelError."""
        files = read_adapter_files(path)  # ours or a PEFT directory
        cls = parametrization_class(files.config.method)
        check_shapes(files, cls.expected_shapes(files.config, self.prefix_model.geometry))
        problems = compare(files.fingerprint, self.prefix_model.base_fingerprint())
        if problems:
            raise IncompatibleBaseModelError(
                f"{path}: adapter does not match the served base model: {'; '.join(problems)}. "
                "Serve it with the base model it was trained on."
            )
        return AdapterSpec(method=files.config.method, num_virtual_tokens=files.config.num_virtual_tokens)

    def compile(self, path: Path) -> PrefixKV:
        """Load, compile, detach and drop the parametrization; only the PrefixKV stays."""
        files = read_adapter_files(path)  # ours or a PEFT directory
        if files.compiled is not None and not compare(files.fingerprint, self.prefix_model.base_fingerprint()):
            return files.compiled.detach().to(device=self.device, dtype=self.dtype)  # saved pre-compiled
        with self._lock:
            name = f"serve-{next(self._counter)}"
            self.prefix_model.load_adapter(path, name)
            try:
                with torch.no_grad():
                    kv = self.prefix_model.compile(name).detach()
            finally:
                self.prefix_model.remove_adapter(name)
        return kv.to(device=self.device, dtype=self.dtype)
