"""`prefixtune.core` declares its public surface; model-family facts come from capability functions."""

from __future__ import annotations

import importlib
import types

import pytest

import prefixtune.core as core
from tests.conftest import make_model


def test_every_declared_name_resolves():
    for name in ("capture", "fingerprint", "reference", "geometry"):  # submodules, imported: no name shadowed
        importlib.import_module(f"prefixtune.core.{name}")
    for name in core.__all__:
        assert not isinstance(getattr(core, name), types.ModuleType), name
    with pytest.raises(AttributeError):
        core.no_such_name  # noqa: B018


@pytest.mark.parametrize("kind,heads,positions", [("gpt2", 4, 256), ("llama", 4, 256), ("qwen3", 4, 256)])
def test_family_facts(kind: str, heads: int, positions: int):
    model = make_model(kind)  # GPT-2 names them n_head / n_positions
    assert core.num_attention_heads(model) == heads
    assert core.max_positions(model) == positions
    assert len(core.decoder_layers(model)) == 3
