"""Reading a Hugging Face PEFT prompt-learning adapter directory, safely and without the `peft` package.

One job: turn `adapter_config.json` + `adapter_model.safetensors` into a validated `PeftAdapter` (the config
and the one `prompt_embeddings` tensor), or raise `AdapterFormatError` naming the file, the problem and what
to do. Pickle files (`adapter_model.bin`) are never loaded: unpickling can run arbitrary code. Values are
not checked for NaN/Inf here (the importer does; `doctor` reads raw values on purpose).

PEFT's layouts (peft 0.17-0.21, `peft_model.PeftModel.get_prompt`):
- PREFIX_TUNING: `prompt_embeddings` [m, num_layers * 2 * token_dim], viewed as (m, 2L, H, D) with
  H = num_attention_heads and D = token_dim // H; index 2l holds layer l's keys, 2l+1 its values. For
  grouped-query models PEFT sets H = num_key_value_heads and token_dim = H * head_dim. With
  `prefix_projection` PEFT runs its MLP at save time, so the file always holds the projected keys/values.
- PROMPT_TUNING: `prompt_embeddings` [m * num_transformer_submodules, token_dim], the soft prompt.
Depends on safetensors, torch and `prefixtune.errors` only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefixtune.errors import AdapterFormatError
from prefixtune.io.tensor_file import read_safetensors
from prefixtune.parametrizations.peft_types import (
    PEFT_POSITION_CONVENTION,
    PREFIX_TUNING,
    PROMPT_TUNING,
    SUPPORTED_TYPES,
)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")
TENSOR_NAME = "prompt_embeddings"
__all__ = ["PEFT_POSITION_CONVENTION", "PREFIX_TUNING", "PROMPT_TUNING", "SUPPORTED_TYPES", "PeftAdapter"]
RESAVE_HINT = (
    "re-save it with safetensors where you trust the file: "
    "PeftModel.from_pretrained(model, SRC).save_pretrained(DST, safe_serialization=True)"
)


@dataclass(frozen=True, slots=True)
class PeftAdapter:
    """A PEFT prompt-learning adapter as read from disk.

    Attributes:
        path: the directory.
        peft_type: "PREFIX_TUNING" or "PROMPT_TUNING".
        config: the parsed adapter_config.json.
        embeddings: `prompt_embeddings`, [m, L*2*token_dim] (prefix tuning) or [m, token_dim] (prompt tuning).
    """

    path: Path
    peft_type: str
    config: dict[str, Any]
    embeddings: torch.Tensor

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.config["num_virtual_tokens"])

    @property
    def num_layers(self) -> int:
        return int(self.config["num_layers"])

    @property
    def num_heads(self) -> int:
        """H of PEFT's (m, 2L, H, D) view: the key/value heads for prefix tuning."""
        return int(self.config["num_attention_heads"])

    @property
    def head_dim(self) -> int:
        return int(self.config["token_dim"]) // self.num_heads

    def layer_kv(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """PREFIX_TUNING only: per-layer keys and values, (H, m, D) each, exactly as PEFT hands them over."""
        m, L, H, D = self.num_virtual_tokens, self.num_layers, self.num_heads, self.head_dim
        view = self.embeddings.view(m, 2 * L, H, D)  # (m, 2L, H, D)
        keys = [view[:, 2 * i].transpose(0, 1).contiguous() for i in range(L)]  # (H, m, D)
        values = [view[:, 2 * i + 1].transpose(0, 1).contiguous() for i in range(L)]
        return keys, values


def is_peft_dir(path: str | os.PathLike) -> bool:
    """Whether `path` looks like a PEFT adapter: its config names a `peft_type`, or it holds only PEFT weights."""
    root = Path(path)
    config = root / CONFIG_FILE
    if config.is_file():
        try:
            document = json.loads(config.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False
        return isinstance(document, dict) and "peft_type" in document
    return any((root / name).is_file() for name in (WEIGHTS_FILE, *PICKLE_FILES))


def read_peft_dir(path: str | os.PathLike) -> PeftAdapter:
    """Read and validate a PEFT PREFIX_TUNING or PROMPT_TUNING directory (values are not checked).

    Raises:
        AdapterFormatError: missing directory or config, unsupported peft_type or task, pickle-only weights,
            missing or extra tensors, a tensor shape that disagrees with the config.
    """
    root = Path(path)
    if not root.is_dir():
        raise AdapterFormatError(f"{root}: no such PEFT adapter directory")
    config = _read_config(root / CONFIG_FILE)
    embeddings = _read_embeddings(root)
    adapter = PeftAdapter(path=root, peft_type=config["peft_type"], config=config, embeddings=embeddings)
    _check_shape(adapter)
    return adapter


def _read_config(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise AdapterFormatError(
            f"{file}: missing; a PEFT adapter directory holds {CONFIG_FILE} and {WEIGHTS_FILE}. "
            "Copy the adapter_config.json that PEFT saved next to the weights"
        )
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterFormatError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or "peft_type" not in config:
        raise AdapterFormatError(f"{file}: not a PEFT adapter config (no 'peft_type' key)")
    problems = _config_problems(config)
    if problems:
        raise AdapterFormatError(f"{file}: " + "; ".join(problems))
    return config


def _config_problems(config: dict[str, Any]) -> list[str]:
    """Everything in a PEFT config that prefixtune cannot import, in plain words."""
    problems = []
    peft_type = config.get("peft_type")
    if peft_type not in SUPPORTED_TYPES:
        problems.append(
            f"peft_type {peft_type!r} cannot be imported; prefixtune imports {' and '.join(SUPPORTED_TYPES)} "
            "(other PEFT methods change the model's weights, not its prefix)"
        )
    task = config.get("task_type")
    if task not in (None, "CAUSAL_LM"):
        problems.append(f"task_type {task!r} is not supported; prefixtune works with decoder-only CAUSAL_LM models")
    if config.get("num_transformer_submodules", 1) not in (1, None):
        problems.append(
            f"num_transformer_submodules={config['num_transformer_submodules']} means an encoder-decoder model; "
            "prefixtune supports decoder-only models (1)"
        )
    for key in ("num_virtual_tokens", "token_dim", "num_layers", "num_attention_heads"):
        value = config.get(key)
        if not isinstance(value, int) or value < 1:
            problems.append(f"{key}={value!r} must be a positive integer")
    return problems


def _read_embeddings(root: Path) -> torch.Tensor:
    file = root / WEIGHTS_FILE
    if not file.is_file():
        pickles = [name for name in PICKLE_FILES if (root / name).is_file()]
        if pickles:
            raise AdapterFormatError(
                f"{root}: holds only {pickles[0]}, a pickle file; prefixtune never loads pickle files because "
                f"unpickling can run arbitrary code; {RESAVE_HINT}"
            )
        raise AdapterFormatError(f"{file}: missing; a PEFT adapter directory holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    tensors, _ = read_safetensors(file)
    if set(tensors) != {TENSOR_NAME}:
        raise AdapterFormatError(
            f"{file}: expected exactly one tensor named {TENSOR_NAME!r} (PEFT's prompt-learning layout), found "
            f"{sorted(tensors)[:6]}; was it saved by PEFT PREFIX_TUNING or PROMPT_TUNING?"
        )
    embeddings = tensors[TENSOR_NAME]
    if not torch.is_floating_point(embeddings):
        raise AdapterFormatError(f"{file}: {TENSOR_NAME!r} has dtype {embeddings.dtype}; expected floating point")
    return embeddings


def _check_shape(adapter: PeftAdapter) -> None:
    config, file = adapter.config, adapter.path / WEIGHTS_FILE
    m, width = config["num_virtual_tokens"], config["token_dim"]
    if adapter.peft_type == PREFIX_TUNING:
        if width % config["num_attention_heads"]:
            raise AdapterFormatError(
                f"{adapter.path / CONFIG_FILE}: token_dim={width} is not a multiple of "
                f"num_attention_heads={config['num_attention_heads']}"
            )
        expected: tuple[int, ...] = (m, config["num_layers"] * 2 * width)
        what = "[num_virtual_tokens, num_layers * 2 * token_dim]"
    else:
        expected = (m * (config.get("num_transformer_submodules") or 1), width)
        what = "[num_virtual_tokens, token_dim]"
    got = tuple(adapter.embeddings.shape)
    if got != expected:
        hint = ""
        if adapter.peft_type == PREFIX_TUNING and config.get("prefix_projection") and got == (m, width):
            hint = " (these look like the un-projected embeddings; save the adapter with PEFT to fold the MLP)"
        raise AdapterFormatError(
            f"{file}: {TENSOR_NAME!r} has shape {got}, but its config says {what} = {expected}{hint}"
        )
