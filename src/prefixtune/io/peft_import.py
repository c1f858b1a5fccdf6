"""Importing Hugging Face PEFT adapters: each PEFT type becomes the method that declares it.

PREFIX_TUNING becomes method "kv" and PROMPT_TUNING method "prompt" (`Parametrization.peft_import_type`).

One job: map a validated `PeftAdapter` onto prefixtune's adapter contents (`AdapterFiles`), so that
`PrefixModel.load_adapter` takes a PEFT directory as it takes ours, and `import_peft` writes one of ours.

Why this is exact: PEFT hands its per-layer keys/values to the model as a cache, used as the attention
consumes them (no norm, no rotation), and numbers the real tokens m + j. That is our method "kv" with the
"shifted" position convention. A PEFT soft prompt enters before the token embeddings at positions 0..m-1,
which is our method "prompt". Must not depend on train/, serve/ or cli/.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prefixtune.config import PrefixConfig
from prefixtune.core import model_fingerprint, read_geometry
from prefixtune.errors import AdapterFormatError
from prefixtune.io.adapter_dir import AdapterFiles, check_shapes, read_adapter_dir, save_adapter_dir
from prefixtune.io.peft_format import (
    PEFT_POSITION_CONVENTION,
    WEIGHTS_FILE,
    PeftAdapter,
    is_peft_dir,
    read_peft_dir,
)
from prefixtune.parametrizations import all_classes, parametrization_class
from prefixtune.parametrizations.base import Parametrization


def method_for_peft_type(peft_type: str) -> type[Parametrization]:
    """The registered method that imports `peft_type`.

    Raises:
        AdapterFormatError: no method imports it.
    """
    for cls in all_classes():
        if cls.peft_import_type == peft_type:
            return cls
    raise AdapterFormatError(f"no prefixtune method imports PEFT {peft_type} adapters")


def peft_to_adapter_files(adapter: PeftAdapter) -> AdapterFiles:
    """The prefixtune adapter equal to a PEFT one (method "kv" or "prompt"), float32.

    Raises:
        AdapterFormatError: the PEFT tensor holds NaN or Inf values.
    """
    embeddings = adapter.embeddings
    if not bool(torch.isfinite(embeddings).all()):
        bad = int((~torch.isfinite(embeddings)).sum())
        raise AdapterFormatError(
            f"{adapter.path / WEIGHTS_FILE}: 'prompt_embeddings' holds {bad} NaN/Inf values; the adapter is broken "
            "(run `prefixtune doctor MODEL ADAPTER` for details)"
        )
    cls = method_for_peft_type(adapter.peft_type)
    tensors = {name: t.float().contiguous() for name, t in cls.tensors_from_peft(adapter).items()}
    config = PrefixConfig(
        method=cls.method,
        num_virtual_tokens=adapter.num_virtual_tokens,
        position_convention=PEFT_POSITION_CONVENTION,
        **_peft_init(adapter.config),
    )
    return AdapterFiles(
        path=adapter.path,
        config=config,
        tensors=tensors,
        fingerprint=None,  # PEFT records no weights fingerprint; shapes are still checked on load
        metadata={"imported_from": _provenance(adapter)},
        raw_config=adapter.config,
        weights_file=WEIGHTS_FILE,
    )


def _peft_init(raw: dict) -> dict[str, str]:
    """How PEFT started the adapter, in PrefixConfig's terms (recorded, never rerun: the weights are loaded).
    PEFT prefix tuning starts from random values; prompt tuning records its choice."""
    choice, text = raw.get("prompt_tuning_init"), raw.get("prompt_tuning_init_text")
    if choice == "TEXT" and isinstance(text, str) and text:
        return {"init": "text", "init_text": text}
    return {"init": "vocab" if choice == "SAMPLE_VOCAB" else "random"}


def read_adapter_files(path: str | os.PathLike) -> AdapterFiles:
    """An adapter directory in either format: prefixtune's, or PEFT's (converted on the fly).

    Raises:
        AdapterFormatError: as `read_adapter_dir` or `read_peft_dir`.
    """
    if is_peft_dir(path):
        return peft_to_adapter_files(read_peft_dir(path))
    return read_adapter_dir(path)


def import_peft(model: nn.Module, src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Convert a PEFT PREFIX_TUNING / PROMPT_TUNING directory into a prefixtune adapter directory for `model`.

    Args:
        model: the base model the PEFT adapter was trained on (its shapes are checked and its fingerprint
            recorded in the new adapter).
        src: the PEFT adapter directory.
        dst: the prefixtune adapter directory to write (atomically).

    Returns:
        `dst` as a Path.

    Raises:
        AdapterFormatError: malformed PEFT directory, NaN/Inf, or shapes that do not fit `model`.
    """
    files = peft_to_adapter_files(read_peft_dir(src))
    geometry = read_geometry(model)
    check_shapes(files, parametrization_class(files.config.method).expected_shapes(files.config, geometry))
    return save_adapter_dir(
        dst,
        config=files.config,
        tensors=files.tensors,
        geometry=geometry,
        fingerprint=model_fingerprint(model),
        metadata=files.metadata,
    )


def _provenance(adapter: PeftAdapter) -> dict[str, Any]:
    keys = ("peft_type", "peft_version", "base_model_name_or_path", "prefix_projection", "task_type")
    return {"format": "peft", "path": str(adapter.path), **{k: adapter.config.get(k) for k in keys}}
