"""What `doctor` reports: `Finding` (one problem, in plain words, with what to do) and `DoctorReport`.

Plain values only; depends on nothing else in the package.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Every finding code, with a one-line gloss (the CLI's --help and docs list them from here).
CODES: dict[str, str] = {
    "fingerprint_mismatch": "the adapter was made for another base model (architecture or weights)",
    "layer_count_mismatch": "the adapter has prefixes for a different number of layers than the model",
    "width_mismatch": "the adapter's vectors have another width (hidden size or key/value heads) than the model",
    "non_finite": "the adapter holds NaN or Inf values",
    "shared_prefix": "every layer has the identical prefix P^l",
    "zero_prefix": "per-layer prefixes (or the prompt) are all zero",
    "embedding_only": "a 'prefix' adapter that only acts at the embedding layer: it is prompt tuning",
    "position_convention": "a position convention the model cannot use",
    "head_mismatch": "an encoder adapter's own task head does not fit the model's head (class or label count)",
    "sites_mismatch": "encoder-decoder attention sites on a model that has none (a decoder-only model)",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem with an adapter.

    Attributes:
        code: a key of `CODES`, stable for scripts.
        message: what is wrong, with the values seen.
        hint: what to do about it.
    """

    code: str
    message: str
    hint: str

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown finding code {self.code!r}; add it to CODES")


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """Everything `doctor` found about one adapter on one model.

    Attributes:
        adapter: the adapter directory.
        facts: what the adapter is (method, m, layers, source format, position convention, ...).
        findings: the problems; empty when the adapter is healthy.
    """

    adapter: str
    facts: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)

    @property
    def is_healthy(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: adapter, healthy, facts, findings [{code, message, hint}]."""
        return {
            "adapter": self.adapter,
            "healthy": self.is_healthy,
            "facts": dict(self.facts),
            "findings": [asdict(f) for f in self.findings],
        }
