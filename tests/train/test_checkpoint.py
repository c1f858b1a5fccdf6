"""Checkpoints without pickle (issue 10): exact round trip, crafted pickles never run, clear errors for
truncated or legacy checkpoints, stale temporaries removed, a moved run directory resumes."""

from __future__ import annotations

import pickle
import random
import shutil

import numpy as np
import pytest
import torch

from prefixtune.config import PrefixConfig
from prefixtune.errors import CheckpointError
from prefixtune.train.checkpoint import (
    CHECKPOINT_DIR,
    STATE_FILE,
    TENSORS_FILE,
    TrainState,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from prefixtune.train.run import run_training
from tests.train.conftest import short_run_config

ADAPTER = PrefixConfig(method="prefix", num_virtual_tokens=2, seed=0)


class CreatesMarker:
    """Unpickling this object creates a file: what a hostile checkpoint would do instead."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _optimizer_after_steps(params: list[torch.nn.Parameter]):
    optimizer = torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    for _ in range(3):
        optimizer.zero_grad()
        sum((p**2).sum() for p in params).backward()
        optimizer.step()
        scheduler.step()
    return optimizer, scheduler


def _fresh_params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3, 4)), torch.nn.Parameter(torch.zeros(5))]


def test_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]
    optimizer, scheduler = _optimizer_after_steps(params)
    state = TrainState(step=3, best_metric=0.5, best_step=2, tokens_seen=99, base_metrics={"accuracy": 0.25})
    save_checkpoint(tmp_path, params, optimizer, scheduler, state, {"lr": 1e-2, "names": ["a", "b"]})
    expected_draws = (random.random(), float(np.random.rand()), torch.rand(4))

    fresh = _fresh_params()
    optimizer2 = torch.optim.AdamW(fresh, lr=1e-2, betas=(0.9, 0.98))
    scheduler2 = torch.optim.lr_scheduler.LambdaLR(optimizer2, lambda s: 1.0 / (1 + s))
    restored, config = load_checkpoint(tmp_path, fresh, optimizer2, scheduler2)

    assert restored == state and config == {"lr": 1e-2, "names": ["a", "b"]}
    assert all(torch.equal(p, q) for p, q in zip(params, fresh, strict=True))
    for i in (0, 1):
        for key, value in optimizer.state_dict()["state"][i].items():
            assert torch.equal(value, optimizer2.state_dict()["state"][i][key]), key
    assert optimizer2.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
    assert scheduler2.state_dict() == scheduler.state_dict()
    draws = (random.random(), float(np.random.rand()), torch.rand(4))  # RNG states restored exactly
    assert draws[:2] == expected_draws[:2] and torch.equal(draws[2], expected_draws[2])
    assert not list(tmp_path.glob("*.pt")) and (tmp_path / CHECKPOINT_DIR / TENSORS_FILE).is_file()


def test_a_crafted_pickle_checkpoint_is_never_unpickled(tiny_gpt2_dir, sentiment_files, tmp_path):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"params": [CreatesMarker(str(marker))]}, run / "checkpoint.pt")  # the old file name
    with pytest.raises(CheckpointError, match="pickle"):
        run_training(short_run_config(tiny_gpt2_dir, sentiment_files, run, resume=True), ADAPTER)
    assert not marker.exists()

    (run / "checkpoint.pt").unlink()
    (run / CHECKPOINT_DIR).mkdir()
    for name in (TENSORS_FILE, STATE_FILE):  # pickle bytes under the new names
        (run / CHECKPOINT_DIR / name).write_bytes(pickle.dumps(CreatesMarker(str(marker))))
    with pytest.raises(CheckpointError, match="truncated or malformed"):
        run_training(short_run_config(tiny_gpt2_dir, sentiment_files, run, resume=True), ADAPTER)
    assert not marker.exists()


def test_truncated_checkpoints_give_a_clear_error(tmp_path):
    params = _fresh_params()
    optimizer, scheduler = _optimizer_after_steps(params)
    save_checkpoint(tmp_path, params, optimizer, scheduler, TrainState(step=1), {})
    for name in (TENSORS_FILE, STATE_FILE):
        file = tmp_path / CHECKPOINT_DIR / name
        good = file.read_bytes()
        file.write_bytes(good[: len(good) // 2])
        with pytest.raises(CheckpointError, match="without --resume"):
            read_checkpoint(tmp_path)
        file.write_bytes(good)
    read_checkpoint(tmp_path)  # whole again


def test_stale_temporaries_are_removed_and_a_moved_run_resumes(tiny_gpt2_dir, sentiment_files, tmp_path):
    first = run_training(short_run_config(tiny_gpt2_dir, sentiment_files, tmp_path / "run"), ADAPTER)
    moved = tmp_path / "elsewhere"
    shutil.move(first.output_dir, moved)
    (moved / ".adapter.tmp-0123abcd").mkdir()  # what a crash mid-write leaves
    (moved / ".checkpoint.tmp-89abcdef").mkdir()
    (moved / ".train_config.json.tmp-00ff00ff").write_text("{")
    (moved / ".keep-me").write_text("not ours")
    resumed = run_training(short_run_config(tiny_gpt2_dir, sentiment_files, moved, resume=True), ADAPTER)
    assert resumed.output_dir == moved
    assert read_checkpoint(moved)["state"]["step"] == 2
    assert sorted(p.name for p in moved.iterdir() if p.name.startswith(".")) == [".keep-me"]
