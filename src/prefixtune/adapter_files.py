"""Saving, loading and validating adapter directories: the file half of `PrefixModel`.

A mixin, so that `PrefixModel` keeps one public surface while each module keeps one job: this one turns an
adapter into files (`io.adapter_dir`, head included) and files back into an adapter, validating everything
against the base model (fingerprint first, then shapes, configuration and task head) before any state changes.
It uses `PrefixModel`'s internals (`_adapter`, `_insert`, `_check_new_name`, `_check_config`, ...).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from prefixtune.core.fingerprint import compare
from prefixtune.errors import IncompatibleBaseModelError
from prefixtune.io.adapter_dir import AdapterFiles, check_head_shapes, check_shapes, save_adapter_dir
from prefixtune.io.peft_import import read_adapter_files
from prefixtune.model_checks import expected_head_shapes
from prefixtune.parametrizations import parametrization_class
from prefixtune.parametrizations.base import Parametrization
from prefixtune.parametrizations.task_head import TaskHead

logger = logging.getLogger("prefixtune.prefix_model")


class AdapterFilesMixin:
    """`save_adapter`, `load_adapter` and `check_adapter_files` of `PrefixModel`."""

    def save_adapter(self, path: str | os.PathLike, name: str | None = None, *, include_compiled: bool = False) -> Path:
        """Write adapter `name` to directory `path` atomically (reparametrization folded away)."""
        adapter = self._adapter(name)
        with torch.no_grad():
            compiled = self.compile(name).detach() if include_compiled else None
        return save_adapter_dir(
            path,
            config=adapter.config,
            tensors=adapter.folded_state(),
            geometry=adapter.geometry,
            fingerprint=self.base_fingerprint(),
            metadata=self._metadata.get(self._resolve(name), {}),
            compiled=compiled,
            head=None if adapter.task_head is None else adapter.task_head.state(),
        )

    def load_adapter(self, path: str | os.PathLike, name: str | None = None, *, check_fingerprint: bool = True) -> str:
        """Load an adapter directory (ours, or a PEFT PREFIX_TUNING/PROMPT_TUNING one) as `name`.

        `name` defaults to the directory's name. Validates before changing state.

        Raises:
            AdapterFormatError: bad files or shapes. IncompatibleBaseModelError: made for another base model.
        """
        files = read_adapter_files(path)
        name = name or Path(path).name
        self._check_new_name(name)
        cls = self.check_adapter_files(files, check_fingerprint=check_fingerprint)
        device = self.base_model.get_input_embeddings().weight.device
        adapter = cls.from_folded(files.config, self.adapter_geometry(files.config), files.tensors)
        if files.head is not None:
            adapter.task_head = TaskHead(files.head, pooling=files.config.head_pooling)
        self._insert(name, adapter.to(device), files.metadata)
        logger.info(
            "loaded adapter %s (%s, m=%d) from %s",
            name,
            files.config.method,
            files.config.num_virtual_tokens,
            path,
        )
        return name

    def check_adapter_files(self, files: AdapterFiles, *, check_fingerprint: bool = True) -> type[Parametrization]:
        """Validate read adapter files against this base model; return the parametrization class to build.

        The fingerprint is compared first: an adapter for another base model is said to be one, rather than
        reported as the shape mismatch that follows from it.

        Raises:
            IncompatibleBaseModelError: made for another base model. AdapterFormatError: shapes that do not fit.
        """
        cls = parametrization_class(files.config.method)
        if check_fingerprint:
            problems = compare(files.fingerprint, self.base_fingerprint(), include_head=not files.config.train_head)
            if problems:
                raise IncompatibleBaseModelError(
                    f"{files.path}: the adapter was made for another base model: {'; '.join(problems)}. "
                    "Use the base model it was trained on (or check_fingerprint=False to override)."
                )
        check_shapes(files, cls.expected_shapes(files.config, self.adapter_geometry(files.config)))
        self._check_config(files.config, where=f"{files.path}: ")
        if files.config.train_head:
            exact = expected_head_shapes(self.base_model, files.config)  # a mean-pooling head's own tensors
            shapes = exact or {n: tuple(p.shape) for n, p in self.base_model.named_parameters()}
            check_head_shapes(files, shapes, exact=exact is not None)
        return cls
