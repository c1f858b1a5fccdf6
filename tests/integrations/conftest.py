"""Fixtures for the trainer integrations."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def fresh_accelerator_state() -> Iterator[None]:
    """transformers' Trainer creates accelerate's process-wide AcceleratorState with its own settings; later
    tests in this process that build an `Accelerator(cpu=True)` (prefixtune's own trainer) would be refused
    ("AcceleratorState has already been initialized"), so each test here leaves it as it found it: unset."""
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
