"""Resumable training checkpoints: adapter parameters, optimizer, scheduler, RNG states and step.

One job: write and read one checkpoint file atomically (temporary name, then `os.replace`), so an interrupted
write never corrupts the previous checkpoint. The trainable tensors are saved as they are trained (before any
reparametrization is folded), which is what exact resumption needs; the shareable adapter is saved separately
by the core. Depends on torch and `prefixtune.errors`.
"""

from __future__ import annotations

import os
import random
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prefixtune.errors import PrefixtuneError

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_VERSION = 1


@dataclass(slots=True)
class TrainState:
    """What besides parameters and optimizer a resumed run needs to continue exactly."""

    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    tokens_seen: int = 0
    base_metrics: dict[str, float] = field(default_factory=dict)


def rng_state() -> dict[str, Any]:
    """States of every random generator training uses."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: str | Path,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainState,
    config: dict[str, Any],
) -> Path:
    """Write `run_dir/checkpoint.pt` atomically and return its path."""
    path = Path(run_dir) / CHECKPOINT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "version": CHECKPOINT_VERSION,
        "params": [p.detach().cpu().clone() for p in params],
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "state": asdict(state),
        "config": config,
    }
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(
    run_dir: str | Path,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> tuple[TrainState, dict[str, Any]]:
    """Restore parameters, optimizer, scheduler and RNG from `run_dir/checkpoint.pt`.

    Returns:
        The `TrainState` and the config the checkpoint was written with.

    Raises:
        PrefixtuneError: no checkpoint, or one whose parameter shapes do not match this run.
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise PrefixtuneError(f"--resume: no checkpoint at {path}; train without --resume first")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    saved = payload["params"]
    shapes = [tuple(p.shape) for p in params]
    if [tuple(t.shape) for t in saved] != shapes:
        raise PrefixtuneError(
            f"{path} holds parameters of shapes {[tuple(t.shape) for t in saved]} but this run trains "
            f"{shapes}; resume with the same adapter configuration or use a new --output-dir"
        )
    with torch.no_grad():
        for p, t in zip(params, saved, strict=True):
            p.copy_(t.to(p.device))
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    set_rng_state(payload["rng"])
    return TrainState(**payload["state"]), payload["config"]
