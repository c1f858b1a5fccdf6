"""Resumable training checkpoints: adapter parameters, optimizer, scheduler, RNG states and step.

One job: write and read one checkpoint directory, `run_dir/checkpoint/`, atomically (built under a temporary
name, then renamed), so an interrupted write never corrupts the previous checkpoint. Nothing is pickled (issue
10): every tensor goes into `tensors.safetensors`, everything else (optimizer and scheduler state structure,
RNG states, step counters, the config) into `state.json`, where a tensor appears as {"__tensor__": name}, a
tuple as {"__tuple__": [...]}, a dict with non-string keys as {"__items__": [[key, value], ...]} and a numpy
array as {"__ndarray__": [...], "dtype": ...}. Reading is exact: resumed tensors are bit-identical. The
trainable tensors are saved as they are trained (before any reparametrization is folded), which is what exact
resumption needs; the shareable adapter is saved separately by the core. Depends on torch, safetensors,
numpy, `prefixtune.io` (atomic writes, safetensors reading) and `prefixtune.errors`.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from prefixtune.errors import AdapterFormatError, CheckpointError
from prefixtune.io.atomic import atomic_directory
from prefixtune.io.tensor_file import read_safetensors

CHECKPOINT_DIR = "checkpoint"
TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"
LEGACY_FILE = "checkpoint.pt"  # the pickle format of prefixtune <= 0.x: refused, never unpickled
CHECKPOINT_VERSION = 2


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


# ----- JSON + safetensors encoding of nested state -----------------------------------------------------
def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """`obj` as JSON-ready values; tensors are moved into `tensors` under generated names."""
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise CheckpointError(f"cannot store a {type(obj).__name__} in a checkpoint (only tensors and JSON values)")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `_encode`. Raises KeyError/TypeError/ValueError on a malformed document."""
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=np.dtype(obj["dtype"]))
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


# ----- writing and reading -----------------------------------------------------------------------------
def save_checkpoint(
    run_dir: str | Path,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainState,
    config: dict[str, Any],
) -> Path:
    """Write `run_dir/checkpoint/` atomically and return its path."""
    path = Path(run_dir) / CHECKPOINT_DIR
    tensors: dict[str, torch.Tensor] = {}
    document = {
        "version": CHECKPOINT_VERSION,
        "params": _encode(list(params), tensors),
        "optimizer": _encode(optimizer.state_dict(), tensors),
        "scheduler": _encode(scheduler.state_dict(), tensors),
        "rng": _encode(rng_state(), tensors),
        "state": _encode(asdict(state), tensors),
        "config": _encode(config, tensors),
    }
    with atomic_directory(path) as tmp:
        save_file(tensors, str(tmp / TENSORS_FILE))
        (tmp / STATE_FILE).write_text(json.dumps(document))
    return path


def read_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The decoded checkpoint of `run_dir`: {"version", "params", "optimizer", "scheduler", "rng", "state",
    "config"}, tensors on the CPU. Never unpickles anything.

    Raises:
        CheckpointError: no checkpoint, a legacy pickle checkpoint, or a truncated or malformed one.
    """
    path = Path(run_dir) / CHECKPOINT_DIR
    if not path.is_dir():
        if (Path(run_dir) / LEGACY_FILE).exists():
            raise CheckpointError(
                f"--resume: {Path(run_dir) / LEGACY_FILE} is a pickle checkpoint, which can run code when read, so "
                "it is not read; start the run again without --resume (or with a new --output-dir)"
            )
        raise CheckpointError(f"--resume: no checkpoint at {path}; train without --resume first")
    try:
        tensors, _ = read_safetensors(path / TENSORS_FILE)
        document = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        if not isinstance(document, dict) or document.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"version {document.get('version') if isinstance(document, dict) else None!r}")
        return {k: _decode(v, tensors) for k, v in document.items()}
    except (AdapterFormatError, OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"--resume: the checkpoint {path} is truncated or malformed ({type(exc).__name__}: {exc}); "
            "start the run again without --resume (or with a new --output-dir)"
        ) from None


def load_checkpoint(
    run_dir: str | Path,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> tuple[TrainState, dict[str, Any]]:
    """Restore parameters, optimizer, scheduler and RNG from `run_dir/checkpoint/`.

    Returns:
        The `TrainState` and the config the checkpoint was written with.

    Raises:
        CheckpointError: no checkpoint, a legacy, truncated or malformed one, or one whose parameter shapes do
            not match this run.
    """
    payload = read_checkpoint(run_dir)
    saved = payload["params"]
    shapes = [tuple(p.shape) for p in params]
    if not isinstance(saved, list) or [tuple(getattr(t, "shape", ())) for t in saved] != shapes:
        raise CheckpointError(
            f"{Path(run_dir) / CHECKPOINT_DIR} holds parameters of shapes "
            f"{[tuple(getattr(t, 'shape', ())) for t in saved]} but this run trains {shapes}; resume with the "
            "same adapter configuration or use a new --output-dir"
        )
    try:
        with torch.no_grad():
            for p, t in zip(params, saved, strict=True):
                p.copy_(t.to(p.device))
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        set_rng_state(payload["rng"])
        return TrainState(**payload["state"]), payload["config"]
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"--resume: the checkpoint in {run_dir} does not fit this run ({type(exc).__name__}: {exc}); "
            "start the run again without --resume (or with a new --output-dir)"
        ) from None
