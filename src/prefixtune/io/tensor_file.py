"""Reading a safetensors file, the one copy: every tensor and the header's metadata, or an `AdapterFormatError`
naming the file when it is missing, truncated or corrupt (safetensors raises several unrelated types for
that). Never unpickles anything. Depends on safetensors, torch and `prefixtune.errors` only."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from prefixtune.errors import AdapterFormatError

# What safetensors raises on a missing, truncated or garbled file (the Rust side's error, I/O, header parsing).
READ_ERRORS = (SafetensorError, OSError, ValueError, RuntimeError)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor of a safetensors file, on the CPU, and its string metadata.

    Args:
        path: the file.

    Returns:
        `(tensors, metadata)`; metadata is `{}` when the header has none.

    Raises:
        AdapterFormatError: the file is missing, truncated or corrupt (the message names it).
    """
    file = Path(path)
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    except READ_ERRORS as exc:
        raise AdapterFormatError(f"{file}: cannot be read, truncated or corrupt ({exc})") from None
    return tensors, metadata
