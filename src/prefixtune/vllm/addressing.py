"""How a vLLM request names its prefix adapter: the one contract between clients, the scheduler and workers.

A request for adapter A (m = A's `num_virtual_tokens`) carries:
- prompt token ids `[PLACEHOLDER_TOKEN_ID] * m + x` (the placeholders' keys/values are written by the
  connector; their token ids are never embedded);
- `kv_transfer_params = {"prefixtune_adapter": A_id}` (in vLLM's SamplingParams.extra_args, or the
  `kv_transfer_params` field of an OpenAI request to `vllm serve`);
- `cache_salt = "prefixtune:" + A_id`, so vLLM's prefix cache shares A's blocks between A's requests only.

`A_id` names a KV pack file `<kv_root>/<A_id>.kv.safetensors` in the directory the connector was configured
with (`kv_connector_extra_config={"kv_root": ...}`). Nothing else is read, so a client cannot make the
server open other files. `prefixtune serve --engine vllm` uses content-addressed ids, so a changed adapter
gets a new id and can never meet stale cache blocks. Depends on nothing but the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ADAPTER_PARAM = "prefixtune_adapter"
PACK_SUFFIX = ".kv.safetensors"
# Any in-vocabulary id works: placeholder positions are never computed by the model, only written.
PLACEHOLDER_TOKEN_ID = 0
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def validate_adapter_id(adapter_id: object) -> str:
    """Return `adapter_id` if it names a pack file (letters, digits, '_', '-', '.'; no '..'), else ValueError."""
    if not isinstance(adapter_id, str) or not _ID.fullmatch(adapter_id) or ".." in adapter_id:
        raise ValueError(
            f"prefixtune adapter id {adapter_id!r} is invalid: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit, without '..'"
        )
    return adapter_id


def pack_path(kv_root: str | Path, adapter_id: str) -> Path:
    """The KV pack file of `adapter_id` inside `kv_root`."""
    return Path(kv_root) / f"{validate_adapter_id(adapter_id)}{PACK_SUFFIX}"


def adapter_of(kv_transfer_params: Mapping[str, Any] | None) -> str | None:
    """The adapter id a request names, or None for the bare model. Raises ValueError for a malformed id."""
    if not kv_transfer_params or ADAPTER_PARAM not in kv_transfer_params:
        return None
    return validate_adapter_id(kv_transfer_params[ADAPTER_PARAM])


def cache_salt(adapter_id: str) -> str:
    """The prefix-cache salt of an adapter's requests (adapters with equal m must not share blocks)."""
    return f"prefixtune:{adapter_id}"


def adapter_prompt(prompt_token_ids: Sequence[int], adapter_id: str, num_virtual_tokens: int) -> dict[str, Any]:
    """A vLLM `TokensPrompt` for `adapter_id`: placeholders, then the real prompt, with the adapter's salt."""
    return {
        "prompt_token_ids": [PLACEHOLDER_TOKEN_ID] * num_virtual_tokens + list(prompt_token_ids),
        "cache_salt": cache_salt(adapter_id),
    }


def adapter_params(adapter_id: str) -> dict[str, Any]:
    """The `kv_transfer_params` of a request for `adapter_id`."""
    return {ADAPTER_PARAM: validate_adapter_id(adapter_id)}
