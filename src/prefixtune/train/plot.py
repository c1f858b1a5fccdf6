"""Training curves: loss and validation metric against optimizer step, saved as a PNG.

One job: metrics records in, image file out. Uses matplotlib's Agg backend (no display needed) and never
touches global pyplot state. Depends on matplotlib only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_curves(records: Sequence[dict[str, Any]], path: str | Path, metric: str, title: str = "") -> Path:
    """Draw training loss and `eval_<metric>` (with the base model's value as a dashed line) to `path`.

    Args:
        records: metrics.jsonl records (`step` plus `loss`, `eval_<metric>`, `base_<metric>` keys).
        path: where the PNG goes.
        metric: the validation metric name, e.g. `accuracy`.
        title: figure title.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, metric_ax = fig.subplots(1, 2)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    if train:
        loss_ax.plot(*zip(*train, strict=True), color="tab:blue")
    loss_ax.set(xlabel="step", ylabel="training loss", title="loss")
    evals = [(r["step"], r[f"eval_{metric}"]) for r in records if f"eval_{metric}" in r]
    if evals:
        metric_ax.plot(*zip(*evals, strict=True), marker="o", color="tab:green", label="adapter")
    base = [r[f"base_{metric}"] for r in records if f"base_{metric}" in r]
    if base:
        metric_ax.axhline(base[-1], linestyle="--", color="gray", label="base model")
    metric_ax.set(xlabel="step", ylabel=f"validation {metric}", title=metric)
    if evals or base:
        metric_ax.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
