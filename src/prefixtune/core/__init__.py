"""The core: the compiled artifact (`PrefixKV`), the one injection mechanism, and the reference path.

Knows nothing of training, files or HTTP. All transformers-specific code lives in `core/hf/`, which nothing
outside `core` imports (ruff's banned-api rule TID251 enforces it): the rest of the package uses the names
below. They are imported on first use (PEP 562), so importing one costs only what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefixtune.core.capture import capture_kv, layer_input_states
    from prefixtune.core.fingerprint import compare as compare_fingerprints
    from prefixtune.core.fingerprint import fingerprint as model_fingerprint
    from prefixtune.core.geometry import ModelGeometry
    from prefixtune.core.hf.attention import uninstall as uninstall_attention
    from prefixtune.core.hf.checkpointing import disable as disable_checkpointing
    from prefixtune.core.hf.checkpointing import enable as enable_checkpointing
    from prefixtune.core.hf.encoder import (
        encoder_family,
        encoder_model_types,
        has_absolute_positions,
        has_bidirectional_attention,
        position_offset,
    )
    from prefixtune.core.hf.family import decoder_parts
    from prefixtune.core.hf.geometry import read_geometry
    from prefixtune.core.hf.head import output_logits
    from prefixtune.core.hf.layers import (
        decoder_layers,
        embedding_std,
        max_positions,
        num_attention_heads,
        tied_weight_names,
    )
    from prefixtune.core.hf.seq2seq import is_encoder_decoder
    from prefixtune.core.hf.task_head import encoder_output, head_parameter_names, mean_pool, run_head
    from prefixtune.core.inject import build_prefix_batch, ensure_installed, prefix_forward, prepare_prefix_inputs
    from prefixtune.core.positions import shifted_position_ids
    from prefixtune.core.prefix_batch import KVStore, PrefixBatch, active_prefix_batch
    from prefixtune.core.prefix_kv import PrefixKV
    from prefixtune.core.reference import reference_kv_logits, reference_logits
    from prefixtune.core.reference_encoder import reference_encoder_output

# Public name -> (module, attribute).
_EXPORTS: dict[str, tuple[str, str]] = {
    "KVStore": ("prefixtune.core.prefix_batch", "KVStore"),
    "ModelGeometry": ("prefixtune.core.geometry", "ModelGeometry"),
    "PrefixBatch": ("prefixtune.core.prefix_batch", "PrefixBatch"),
    "PrefixKV": ("prefixtune.core.prefix_kv", "PrefixKV"),
    "active_prefix_batch": ("prefixtune.core.prefix_batch", "active_prefix_batch"),
    "build_prefix_batch": ("prefixtune.core.inject", "build_prefix_batch"),
    "capture_kv": ("prefixtune.core.capture", "capture_kv"),
    "compare_fingerprints": ("prefixtune.core.fingerprint", "compare"),
    "decoder_layers": ("prefixtune.core.hf.layers", "decoder_layers"),
    "decoder_parts": ("prefixtune.core.hf.family", "decoder_parts"),
    "disable_checkpointing": ("prefixtune.core.hf.checkpointing", "disable"),
    "embedding_std": ("prefixtune.core.hf.layers", "embedding_std"),
    "enable_checkpointing": ("prefixtune.core.hf.checkpointing", "enable"),
    "encoder_family": ("prefixtune.core.hf.encoder", "encoder_family"),
    "encoder_model_types": ("prefixtune.core.hf.encoder", "encoder_model_types"),
    "encoder_output": ("prefixtune.core.hf.task_head", "encoder_output"),
    "has_absolute_positions": ("prefixtune.core.hf.encoder", "has_absolute_positions"),
    "has_bidirectional_attention": ("prefixtune.core.hf.encoder", "has_bidirectional_attention"),
    "head_parameter_names": ("prefixtune.core.hf.task_head", "head_parameter_names"),
    "mean_pool": ("prefixtune.core.hf.task_head", "mean_pool"),
    "ensure_installed": ("prefixtune.core.inject", "ensure_installed"),
    "is_encoder_decoder": ("prefixtune.core.hf.seq2seq", "is_encoder_decoder"),
    "layer_input_states": ("prefixtune.core.capture", "layer_input_states"),
    "max_positions": ("prefixtune.core.hf.layers", "max_positions"),
    "position_offset": ("prefixtune.core.hf.encoder", "position_offset"),
    # Not "fingerprint": that is a submodule, which would shadow the function once imported.
    "model_fingerprint": ("prefixtune.core.fingerprint", "fingerprint"),
    "num_attention_heads": ("prefixtune.core.hf.layers", "num_attention_heads"),
    "output_logits": ("prefixtune.core.hf.head", "output_logits"),
    "prefix_forward": ("prefixtune.core.inject", "prefix_forward"),
    "prepare_prefix_inputs": ("prefixtune.core.inject", "prepare_prefix_inputs"),
    "read_geometry": ("prefixtune.core.hf.geometry", "read_geometry"),
    "reference_kv_logits": ("prefixtune.core.reference", "reference_kv_logits"),
    "reference_encoder_output": ("prefixtune.core.reference_encoder", "reference_encoder_output"),
    "reference_logits": ("prefixtune.core.reference", "reference_logits"),
    "run_head": ("prefixtune.core.hf.task_head", "run_head"),
    "shifted_position_ids": ("prefixtune.core.positions", "shifted_position_ids"),
    "tied_weight_names": ("prefixtune.core.hf.layers", "tied_weight_names"),
    "uninstall_attention": ("prefixtune.core.hf.attention", "uninstall"),
}

__all__ = [
    "KVStore",
    "ModelGeometry",
    "PrefixBatch",
    "PrefixKV",
    "active_prefix_batch",
    "build_prefix_batch",
    "capture_kv",
    "compare_fingerprints",
    "decoder_layers",
    "decoder_parts",
    "disable_checkpointing",
    "embedding_std",
    "enable_checkpointing",
    "encoder_family",
    "encoder_model_types",
    "encoder_output",
    "ensure_installed",
    "has_absolute_positions",
    "has_bidirectional_attention",
    "head_parameter_names",
    "is_encoder_decoder",
    "layer_input_states",
    "max_positions",
    "mean_pool",
    "model_fingerprint",
    "num_attention_heads",
    "output_logits",
    "position_offset",
    "prefix_forward",
    "prepare_prefix_inputs",
    "read_geometry",
    "reference_encoder_output",
    "reference_kv_logits",
    "reference_logits",
    "run_head",
    "shifted_position_ids",
    "tied_weight_names",
    "uninstall_attention",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'prefixtune.core' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
