"""Adapter diagnostics: `run_doctor(model, adapter_path)` checks an adapter against a base model.

Reads adapter files raw (never through the loader, which refuses what the doctor must explain) and reports
plain-words `Finding`s. Depends on core/, io/, parametrizations/ and config; never on train/, serve/ or cli/.
`run_doctor` is imported on first use (PEP 562), so `diagnostics.findings` loads without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefixtune.diagnostics.findings import CODES, DoctorReport, Finding

if TYPE_CHECKING:
    from prefixtune.diagnostics.doctor import run_doctor

__all__ = ["CODES", "DoctorReport", "Finding", "run_doctor"]


def __getattr__(name: str) -> Any:
    if name == "run_doctor":
        from prefixtune.diagnostics.doctor import run_doctor

        return run_doctor
    raise AttributeError(f"module 'prefixtune.diagnostics' has no attribute {name!r}")
