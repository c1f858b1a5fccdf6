"""A fingerprint of a base model, recorded in every adapter so the right prefix never meets the wrong base.

Two parts: the architecture (shapes read from the config) and a hash of the weights. The weight hash reads a
fixed strided sample of every tensor, rounded to bfloat16, so it is cheap on large models and the same
whether the model was loaded in float32, float16 or bfloat16.

An encoder with a task head (issue 12) is fingerprinted as its bare encoder (`base_model`, the same keys and
hash whichever head class loaded it), and its head apart (`head_sha256`): a head is often new and random at
load, and an adapter that trains its own head (`train_head`) does not depend on the model's; one that keeps
the model's head frozen does, so `compare` checks the head unless told the adapter brings its own.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from prefixtune.core.hf.encoder import has_bidirectional_attention
from prefixtune.core.hf.layers import hidden_size, num_layers
from prefixtune.core.hf.task_head import head_parameter_names

_SAMPLES_PER_TENSOR = 4096


def architecture(model: nn.Module) -> dict[str, Any]:
    """Shape-defining facts of the base model."""
    config = model.config
    out: dict[str, Any] = {
        "model_type": getattr(config, "model_type", type(model).__name__),
        "num_layers": num_layers(model),
        "hidden_size": hidden_size(model),
        "vocab_size": int(model.get_input_embeddings().weight.shape[0]),
    }
    for name in ("num_attention_heads", "num_key_value_heads", "head_dim"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            out[name] = value
    return out


def weights_hash(model: nn.Module) -> str:
    """sha256 over names, shapes and a strided bfloat16 sample of every parameter and buffer."""
    return _hash(model.state_dict())


def _hash(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(state.items()):
            if not torch.is_floating_point(tensor):
                continue
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
            sample = flat[::step][:_SAMPLES_PER_TENSOR].to(device="cpu", dtype=torch.bfloat16)
            digest.update(f"{name}:{tuple(tensor.shape)}".encode())
            digest.update(sample.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


def fingerprint(model: nn.Module) -> dict[str, Any]:
    """The base-model fingerprint stored in adapters: {"architecture": {...}, "weights_sha256": "..."}, and
    for an encoder with a task head "head_sha256" (see the module docstring)."""
    if not has_bidirectional_attention(model):
        return {"architecture": architecture(model), "weights_sha256": weights_hash(model)}
    out = {"architecture": architecture(model), "weights_sha256": weights_hash(model.base_model)}
    head = head_parameter_names(model)
    if head:
        params = dict(model.named_parameters())
        out["head_sha256"] = _hash({name: params[name] for name in head})
    return out


def compare(expected: dict[str, Any] | None, actual: dict[str, Any], *, include_head: bool = True) -> list[str]:
    """Human-readable differences between an adapter's recorded fingerprint and a model's (empty: match).

    `include_head=False` for an adapter that brings its own task head (`train_head`): the model's is unused.
    """
    if not expected:
        return []
    problems = []
    exp_arch, act_arch = expected.get("architecture", {}), actual["architecture"]
    for key in sorted(set(exp_arch) | set(act_arch)):
        if exp_arch.get(key) != act_arch.get(key):
            problems.append(f"{key}: adapter was made for {exp_arch.get(key)!r}, model has {act_arch.get(key)!r}")
    if not problems and expected.get("weights_sha256") != actual["weights_sha256"]:
        problems.append(
            "weights differ: same architecture but the adapter was trained on other weights "
            f"(adapter {str(expected.get('weights_sha256'))[:12]}..., model {actual['weights_sha256'][:12]}...)"
        )
    head = expected.get("head_sha256")
    if not problems and include_head and head is not None and head != actual.get("head_sha256"):
        problems.append(
            "the task head differs: the adapter was trained with the model's head frozen, and this model's head "
            "has other weights (a newly initialized one?); load the model with the head it was trained with"
        )
    return problems
