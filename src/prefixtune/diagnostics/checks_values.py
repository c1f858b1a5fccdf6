"""Doctor checks of an adapter's values: NaN/Inf, a prefix shared by all layers, all-zero prefixes, and the
method's own findings (`Parametrization.diagnose`: a "prefix" adapter that is really prompt tuning, ...).

Each check takes (`RawAdapter`, `ModelFacts`) and returns a list of `Finding`s (empty: nothing wrong).
"""

from __future__ import annotations

import torch

from prefixtune.diagnostics.findings import Finding
from prefixtune.diagnostics.model_facts import ModelFacts
from prefixtune.diagnostics.raw_adapter import RawAdapter


def check_finite(adapter: RawAdapter, facts: ModelFacts) -> list[Finding]:
    """Any stored tensor holds NaN or Inf (the loader refuses such files; here they are counted)."""
    bad = {}
    for name, tensor in {**adapter.tensors, **adapter.extra}.items():
        if torch.is_floating_point(tensor):
            count = int((~torch.isfinite(tensor)).sum())
            if count:
                bad[name] = count
    if not bad:
        return []
    listed = ", ".join(f"{name} ({count})" for name, count in list(bad.items())[:6])
    return [
        Finding(
            "non_finite",
            f"{sum(bad.values())} NaN/Inf values in {len(bad)} tensors: {listed}",
            "training diverged or the file was damaged: retrain with a lower learning rate (or gradient "
            "clipping), or restore the adapter from an earlier checkpoint",
        )
    ]


def check_shared(adapter: RawAdapter, facts: ModelFacts) -> list[Finding]:
    """Every layer has the same prefix: one P copied to all layers instead of a P^l per layer."""
    layers = adapter.layers()
    if not layers or len(layers) < 2 or not layers[0].any():
        return []
    if not all(t.shape == layers[0].shape and torch.equal(t, layers[0]) for t in layers[1:]):
        return []
    return [
        Finding(
            "shared_prefix",
            f"all {len(layers)} layers have the identical prefix; prefix tuning trains a different P^l for "
            "every layer, so the layers were probably tied or filled from one tensor",
            "check the code that built or saved the prefixes (one tensor broadcast to all layers?) and retrain",
        )
    ]


def check_zero(adapter: RawAdapter, facts: ModelFacts) -> list[Finding]:
    """Per-layer prefixes (or the prompt) that are exactly zero: never trained, or saved before training."""
    layers = adapter.layers()
    per_layer = layers is not None
    if layers is None:  # nothing per layer: the stored tensors as one
        layers = [torch.cat([t.flatten() for t in adapter.tensors.values()])]
    zero = [i for i, t in enumerate(layers) if t.numel() and not t.any()]
    if not zero:
        return []
    if len(zero) == len(layers):
        what = f"the prefixes of all {len(layers)} layers are" if per_layer else f"the {adapter.method} adapter is"
        message = f"{what} all zeros: the adapter was never trained, or saved before training"
    else:
        message = f"the prefixes of layers {zero} are all zeros while the others are not"
    return [Finding("zero_prefix", message, "train the adapter (or save it after training), then check again")]


def check_method(adapter: RawAdapter, facts: ModelFacts) -> list[Finding]:
    """The method's own findings on tensors whose shapes fit the model (`Parametrization.diagnose`)."""
    return [Finding(*o) for o in adapter.method_class.diagnose(adapter.tensors, facts.model)]
