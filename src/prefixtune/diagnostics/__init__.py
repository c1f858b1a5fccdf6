"""Adapter diagnostics: `run_doctor(model, adapter_path)` checks an adapter against a base model.

Reads adapter files raw (never through the loader, which refuses what the doctor must explain) and reports
plain-words `Finding`s. Depends on core/, io/ and config; never on train/, serve/ or cli/.
"""

from prefixtune.diagnostics.doctor import run_doctor
from prefixtune.diagnostics.findings import CODES, DoctorReport, Finding

__all__ = ["CODES", "DoctorReport", "Finding", "run_doctor"]
