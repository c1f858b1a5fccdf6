"""Exporting prefixtune adapters to Hugging Face PEFT: PREFIX_TUNING (any method) or PROMPT_TUNING (soft prompts).

One job: write a PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`) that PEFT's
`PeftModel.from_pretrained` loads and whose forward gives the same logits as ours, or refuse, saying why,
when PEFT cannot express the adapter exactly. Which PEFT types a method maps to is the method's own answer
(`Parametrization.peft_export_types`, `peft_export_problem`). The `peft` package is not needed to export.

Why any method exports exactly to PREFIX_TUNING: every method compiles to per-layer keys/values in the form
the attention consumes (prefix/prompt keys already rotated at positions 0..m-1), and PEFT feeds its stored
keys/values to the attention as they are and numbers the real tokens m + j: our "shifted" convention.
Must not depend on train/, serve/ or cli/.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from prefixtune.core import PrefixKV, has_bidirectional_attention, num_attention_heads
from prefixtune.errors import ConfigError
from prefixtune.io.atomic import atomic_directory
from prefixtune.io.peft_format import (
    CONFIG_FILE,
    PEFT_POSITION_CONVENTION,
    PREFIX_TUNING,
    PROMPT_TUNING,
    TENSOR_NAME,
    WEIGHTS_FILE,
)
from prefixtune.parametrizations import parametrization_class
from prefixtune.version import __version__

if TYPE_CHECKING:
    from prefixtune.prefix_model import PrefixModel


def default_peft_type(method: str) -> str:
    """The PEFT type `method` exports to by default (its first `peft_export_types`; PREFIX_TUNING if none)."""
    types = parametrization_class(method).peft_export_types
    return types[0] if types else PREFIX_TUNING


def export_peft(
    pm: PrefixModel,
    path: str | os.PathLike,
    adapter_name: str | None = None,
    *,
    peft_type: str | None = None,
) -> Path:
    """Write adapter `adapter_name` of `pm` as a PEFT adapter directory (atomically).

    Args:
        pm: the PrefixModel holding the adapter (its base model compiles prefix and prompt adapters).
        path: the directory to write.
        adapter_name: which adapter (default: the active one).
        peft_type: "PREFIX_TUNING" (any method) or "PROMPT_TUNING" (method "prompt" only); default
            PROMPT_TUNING for prompts, else PREFIX_TUNING.

    Returns:
        `path` as a Path.

    Raises:
        ConfigError: PEFT cannot express this adapter exactly (position convention, a PROMPT_TUNING export of
            a per-layer method, layers whose key/value shapes differ).
    """
    if has_bidirectional_attention(pm.base_model):
        # PEFT's prefix/prompt configs here are CAUSAL_LM ones, and an encoder adapter may own a task head that
        # PEFT would keep elsewhere (modules_to_save): refuse rather than write a file that loads differently.
        raise ConfigError(
            [
                "PEFT export covers decoder-only causal LMs; this is an encoder adapter (its prefix, and its own task "
                "head if any, stay in prefixtune's adapter directory, which `load_adapter` reads)"
            ],
            source="PEFT export",
        )
    adapter = pm.get_adapter(adapter_name)
    config = adapter.config
    peft_type = peft_type or default_peft_type(config.method)
    _check_exportable(config.method, config.position_convention, peft_type, pm.geometry.kv_shapes)
    name = getattr(pm.base_model.config, "_name_or_path", None) or None
    m = config.num_virtual_tokens
    with torch.no_grad():
        if peft_type == PREFIX_TUNING:
            kv = pm.compile(adapter_name).detach()
            return _write(path, flatten_prefix_kv(kv), _prefix_tuning_config(m, pm.geometry.kv_shapes, name))
        embeddings = adapter.peft_soft_prompt()
    document = _common_config(PROMPT_TUNING, m, pm.geometry.num_layers, name)
    document.update(
        token_dim=pm.geometry.hidden_size,
        num_attention_heads=num_attention_heads(pm.base_model),
        prompt_tuning_init="RANDOM",
        prompt_tuning_init_text=None,
        tokenizer_name_or_path=None,
        tokenizer_kwargs=None,
    )
    return _write(path, embeddings, document)


def export_prefix_kv(kv: PrefixKV, path: str | os.PathLike, *, base_model_name: str | None = None) -> Path:
    """Write compiled keys/values as a PEFT PREFIX_TUNING adapter directory, without the base model.

    PREFIX_TUNING's config needs only layers, heads and widths, which the keys/values carry.

    Args:
        kv: the compiled prefix (`PrefixModel.compile`, or `io.stored_kv.compile_without_model`).
        path: the directory to write.
        base_model_name: PEFT's `base_model_name_or_path` (default: not recorded).

    Returns:
        `path` as a Path.

    Raises:
        ConfigError: PEFT cannot express it exactly (position convention, layers of different shapes).
    """
    kv_shapes = tuple((int(k.shape[0]), int(k.shape[-1])) for k in kv.keys)
    _check_exportable(kv.method, kv.position_convention, PREFIX_TUNING, kv_shapes)
    document = _prefix_tuning_config(kv.num_virtual_tokens, kv_shapes, base_model_name)
    return _write(path, flatten_prefix_kv(kv.detach()), document)


def _write(path: str | os.PathLike, embeddings: torch.Tensor, document: dict[str, Any]) -> Path:
    payload = {TENSOR_NAME: embeddings.detach().to("cpu", torch.float32).contiguous()}
    with atomic_directory(path) as tmp:
        save_file(
            payload, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "exported_by": f"prefixtune {__version__}"}
        )
        (tmp / CONFIG_FILE).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return Path(path)


def flatten_prefix_kv(kv: PrefixKV) -> torch.Tensor:
    """PEFT's PREFIX_TUNING tensor from per-layer keys/values: [m, L*2*H*D], layer l keys at 2l, values at 2l+1."""
    m = kv.num_virtual_tokens
    per_layer = []
    for k, v in zip(kv.keys, kv.values, strict=True):
        per_layer += [k.transpose(0, 1), v.transpose(0, 1)]  # (m, H, D) each
    return torch.stack(per_layer, dim=1).reshape(m, -1)  # (m, 2L, H, D) -> (m, 2L*H*D)


def _check_exportable(method: str, convention: str, peft_type: str, kv_shapes: tuple[tuple[int, int], ...]) -> None:
    problems = []
    if peft_type not in (PREFIX_TUNING, PROMPT_TUNING):
        problems.append(f"peft_type={peft_type!r} is unknown; choose {PREFIX_TUNING} or {PROMPT_TUNING}")
    elif problem := parametrization_class(method).peft_export_problem(peft_type):
        problems.append(problem)
    if convention != PEFT_POSITION_CONVENTION:
        problems.append(
            f"position convention {convention!r} cannot be expressed in PEFT, which always numbers the real tokens "
            f"m + j ({PEFT_POSITION_CONVENTION!r}); keep the adapter in prefixtune's format or export a KV pack"
        )
    shapes = set(kv_shapes)
    if peft_type == PREFIX_TUNING and len(shapes) > 1:
        problems.append(
            f"this model's layers have different key/value shapes {sorted(shapes)}; PEFT's PREFIX_TUNING stores one "
            "shape for all layers, so it cannot hold this adapter exactly (use `prefixtune export-kv` instead)"
        )
    if problems:
        raise ConfigError(problems, source="PEFT export")


def _common_config(peft_type: str, m: int, num_layers: int, base_model_name: str | None) -> dict[str, Any]:
    """adapter_config.json as PEFT 0.17-0.21 writes it, with every field PEFT would otherwise infer filled in."""
    return {
        "peft_type": peft_type,
        "task_type": "CAUSAL_LM",
        "num_virtual_tokens": m,
        "num_layers": num_layers,
        "num_transformer_submodules": 1,
        "inference_mode": True,
        "base_model_name_or_path": base_model_name,
        "revision": None,
        "modules_to_save": None,
        "auto_mapping": None,
    }


def _prefix_tuning_config(m: int, kv_shapes: tuple[tuple[int, int], ...], base_model_name: str | None) -> dict:
    H, D = kv_shapes[0]
    document = _common_config(PREFIX_TUNING, m, len(kv_shapes), base_model_name)
    # PEFT views the tensor as (m, 2L, num_attention_heads, token_dim // num_attention_heads): for
    # grouped-query models these are the key/value heads (PEFT's own rule, peft utils/other.py).
    document.update(
        token_dim=H * D, num_attention_heads=H, encoder_hidden_size=H * D, prefix_projection=False, init_weights=None
    )
    return document
