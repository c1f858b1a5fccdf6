"""Metric loggers: where training and evaluation numbers go (never into log lines).

One job: the `MetricLogger` protocol (a seam, so users can plug in TensorBoard or W&B) and the default JSONL
implementation, one JSON object per line with a `step`. Depends on the standard library only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol


class MetricLogger(Protocol):
    """Receives metrics keyed by optimizer step."""

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Record `metrics` at `step`."""

    def close(self) -> None:
        """Flush and release resources."""


class JsonlMetricLogger:
    """Appends `{"step": ..., **metrics}` lines to a JSONL file, flushed after every line.

    Args:
        path: the file (created with its parent directory).
        truncate_after: on resume, first drop lines logged after this step, so the file reads as if the
            run had never been interrupted.
    """

    def __init__(self, path: str | Path, truncate_after: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= truncate_after]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        elif truncate_after is None:
            self.path.write_text("")
        self._handle = self.path.open("a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Append one line."""
        self._handle.write(json.dumps({"step": step, **metrics}) + "\n")
        self._handle.flush()

    def close(self) -> None:
        """Close the file."""
        self._handle.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file, in order."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
