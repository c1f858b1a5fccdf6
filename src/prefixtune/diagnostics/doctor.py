"""`run_doctor`: check an adapter against a base model and say in plain words what is wrong.

One job: read the adapter raw, read the model's facts, run every registered check, and gather the findings
into a `DoctorReport`. A new check is a function appended to `CHECKS`, not a branch here. Model-dependent
checks that need the shapes to agree run only when they do (a shape finding is reported instead).
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

from torch import nn

from prefixtune.diagnostics import checks_model, checks_values
from prefixtune.diagnostics.findings import DoctorReport, Finding
from prefixtune.diagnostics.model_facts import ModelFacts
from prefixtune.diagnostics.raw_adapter import RawAdapter, read_raw_adapter

Check = Callable[[RawAdapter, ModelFacts], list[Finding]]

# Shape checks first: when they find something, the value checks that need the model's shapes are skipped.
SHAPE_CHECKS: list[Check] = [checks_model.check_sites, checks_model.check_layers, checks_model.check_width]
CHECKS: list[Check] = [
    checks_model.check_fingerprint,
    checks_model.check_positions,
    checks_model.check_head,
    checks_values.check_finite,
    checks_values.check_shared,
    checks_values.check_zero,
]
SHAPE_DEPENDENT_CHECKS: list[Check] = [checks_values.check_method]


def run_doctor(model: nn.Module, adapter_path: str | os.PathLike) -> DoctorReport:
    """Check the adapter at `adapter_path` (prefixtune or PEFT format) against `model`.

    Args:
        model: the base model the adapter is meant for (a transformers causal LM).
        adapter_path: the adapter directory.

    Returns:
        The report; `report.is_healthy` when there are no findings.

    Raises:
        AdapterFormatError: the directory cannot be read at all (missing files, invalid JSON, corrupt weights).
    """
    adapter = read_raw_adapter(adapter_path)
    facts = ModelFacts.read(model)
    # An encoder-decoder adapter covers the slots of its sites only (`ModelGeometry.select`).
    facts = dataclasses.replace(facts, geometry=facts.geometry.select(adapter.sites))
    findings = [f for check in SHAPE_CHECKS for f in check(adapter, facts)]
    shapes_agree = not findings
    findings += [f for check in CHECKS for f in check(adapter, facts)]
    if shapes_agree:
        findings += [f for check in SHAPE_DEPENDENT_CHECKS for f in check(adapter, facts)]
    return DoctorReport(adapter=str(adapter_path), facts=_facts(adapter, facts), findings=findings)


def _facts(adapter: RawAdapter, facts: ModelFacts) -> dict[str, Any]:
    layers = adapter.layers()
    return {
        "format": adapter.source,
        "method": adapter.method,
        "num_virtual_tokens": adapter.num_virtual_tokens,
        "adapter_layers": len(layers) if layers is not None else None,
        "position_convention": adapter.position_convention,
        "has_fingerprint": adapter.fingerprint is not None,
        "num_parameters": sum(t.numel() for t in adapter.tensors.values()),
        "head_parameters": sum(t.numel() for t in (adapter.head or {}).values()),
        "model_family": facts.family,
        "model_layers": facts.geometry.num_layers,
        "model_hidden_size": facts.geometry.hidden_size,
        "model_kv_shapes": [list(s) for s in facts.geometry.kv_shapes],
        **({"sites": site_layers(facts.geometry.sites)} if facts.geometry.sites else {}),
    }


def site_layers(sites: tuple[str, ...]) -> dict[str, int]:
    """Site -> number of layers, for an encoder-decoder geometry's per-slot sites."""
    return dict(Counter(sites))
