"""The trainer on tiny random models: loss falls, only the adapter learns, exact resume, determinism, outputs."""

from __future__ import annotations

import json

import pytest
import torch

import prefixtune as pt
from prefixtune.config import PrefixConfig
from prefixtune.errors import ConfigError, PrefixtuneError
from prefixtune.models import load_model
from prefixtune.train.checkpoint import read_checkpoint
from prefixtune.train.config import TrainConfig
from prefixtune.train.loop import batch_rows
from prefixtune.train.metric_log import read_metrics
from prefixtune.train.run import run_training


def _config(model_dir, files, out, **changes) -> TrainConfig:
    train, valid = files
    base = dict(
        model=str(model_dir),
        data=str(train),
        eval_data=str(valid),
        output_dir=str(out),
        max_steps=12,
        eval_every=4,
        batch_size=4,
        learning_rate=3e-2,
        progress=False,
        log_every=1,
    )
    return TrainConfig(**{**base, **changes})


ADAPTER = PrefixConfig(method="prefix", num_virtual_tokens=4, seed=0)


def _adapter_tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path / "adapter.safetensors"))


def test_loss_falls_and_only_the_adapter_learns(tiny_llama_dir, sentiment_files, tmp_path):
    model, tok = load_model(tiny_llama_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = _config(tiny_llama_dir, sentiment_files, tmp_path / "run", max_steps=30, eval_every=10)
    result = run_training(cfg, ADAPTER, model=model, tokenizer=tok)
    losses = [r["loss"] for r in read_metrics(result.metrics_path) if "loss" in r]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"base weight {key} changed"
    assert result.trainable_parameters == 3 * 4 * 32  # L x m x d
    assert result.loop.best_metric is not None and result.loop.base_metrics["accuracy"] >= 0


def test_run_directory_contents(tiny_gpt2_dir, sentiment_files, tmp_path):
    result = run_training(_config(tiny_gpt2_dir, sentiment_files, tmp_path / "run"), ADAPTER)
    out = result.output_dir
    assert {p.name for p in out.iterdir()} >= {
        "adapter",
        "checkpoint",
        "metrics.jsonl",
        "curve.png",
        "train_config.json",
        "run_config.json",
    }
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    task = config["metadata"]["task"]
    assert task["kind"] == "classification" and task["verbalizer"] == {"neg": " neg", "pos": " pos"}
    records = read_metrics(out / "metrics.jsonl")
    assert records[0]["step"] == 0 and "base_accuracy" in records[0]
    assert [r["step"] for r in records if "eval_accuracy" in r] == [4, 8, 12]
    assert json.loads((out / "train_config.json").read_text())["max_steps"] == 12


def test_resume_equals_uninterrupted_run(tiny_llama_dir, sentiment_files, tmp_path):
    full = run_training(_config(tiny_llama_dir, sentiment_files, tmp_path / "full"), ADAPTER)
    resumed = _resume_from_step(tiny_llama_dir, sentiment_files, tmp_path, stop_at=8)
    final = [read_checkpoint(d) for d in (full.output_dir, resumed)]
    assert final[0]["state"]["step"] == final[1]["state"]["step"] == 12
    for p, q in zip(final[0]["params"], final[1]["params"], strict=True):
        assert torch.equal(p, q)  # bit-identical final parameters
    assert final[0]["optimizer"]["state"][0]["exp_avg_sq"].equal(final[1]["optimizer"]["state"][0]["exp_avg_sq"])
    a, b = _adapter_tensors(full.output_dir / "adapter"), _adapter_tensors(resumed / "adapter")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_metrics(full.metrics_path) == read_metrics(resumed / "metrics.jsonl")


def _resume_from_step(model_dir, files, tmp_path, stop_at):
    """Train to `stop_at` (checkpoint written there), then resume the same run to the full length."""
    from prefixtune.train import loop as loop_module

    out = tmp_path / "resumed"
    cfg = _config(model_dir, files, out)
    original = loop_module.Trainer._eval_and_checkpoint

    def interrupt_after_checkpoint(self):
        original(self)
        if self.state.step == stop_at:
            raise KeyboardInterrupt  # the process dies right after the checkpoint is written

    loop_module.Trainer._eval_and_checkpoint = interrupt_after_checkpoint
    try:
        with pytest.raises(KeyboardInterrupt):
            run_training(cfg, ADAPTER)
    finally:
        loop_module.Trainer._eval_and_checkpoint = original
    run_training(cfg.replace(resume=True), ADAPTER)
    return out


def test_same_seed_same_result_on_cpu(tiny_gpt2_dir, sentiment_files, tmp_path):
    runs = [
        run_training(_config(tiny_gpt2_dir, sentiment_files, tmp_path / f"r{i}", max_steps=6, eval_every=0), ADAPTER)
        for i in range(2)
    ]
    a, b = (_adapter_tensors(r.adapter_dir) for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_grad_accumulation_matches_a_bigger_batch(tiny_llama_dir, sentiment_files, tmp_path):
    # Every example has one target token, so the mean loss over 2 x 4 rows equals the mean over 8 rows.
    big = run_training(
        _config(tiny_llama_dir, sentiment_files, tmp_path / "big", batch_size=8, max_steps=3, eval_every=0), ADAPTER
    )
    acc = run_training(
        _config(
            tiny_llama_dir, sentiment_files, tmp_path / "acc", batch_size=4, grad_accum=2, max_steps=3, eval_every=0
        ),
        ADAPTER,
    )
    a, b = _adapter_tensors(big.adapter_dir), _adapter_tensors(acc.adapter_dir)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert big.loop.tokens == acc.loop.tokens


def test_batch_rows_are_a_pure_function_of_step():
    assert batch_rows(10, 3, 4, seed=1, rank=0, world=1) == batch_rows(10, 3, 4, seed=1, rank=0, world=1)
    epoch = [i for k in range(2) for i in batch_rows(10, k, 4, seed=1, rank=0, world=1)]
    assert len(set(epoch)) == 8  # no repeats within an epoch
    ranks = [batch_rows(16, 0, 4, seed=0, rank=r, world=2) for r in range(2)]
    assert not set(ranks[0]) & set(ranks[1])  # processes get disjoint rows


def test_resume_refuses_changed_settings_and_missing_checkpoint(tiny_gpt2_dir, sentiment_files, tmp_path):
    cfg = _config(tiny_gpt2_dir, sentiment_files, tmp_path / "run", max_steps=2, eval_every=0)
    with pytest.raises(PrefixtuneError, match="no checkpoint"):
        run_training(cfg.replace(resume=True), ADAPTER)
    run_training(cfg, ADAPTER)
    with pytest.raises(ConfigError, match="learning_rate"):
        run_training(cfg.replace(resume=True, learning_rate=1e-3), ADAPTER)


def test_train_config_lists_every_problem():
    with pytest.raises(ConfigError) as err:
        TrainConfig(data="", batch_size=0, schedule="step", warmup_steps=500, max_steps=10)
    assert len(err.value.problems) == 4
    assert TrainConfig(data="x").resolved_learning_rate(has_reparam=False) == 5e-3
    assert TrainConfig(data="x").resolved_learning_rate(has_reparam=True) == 1e-4


def test_default_learning_rate_is_the_methods_own():
    """`prefix` trains hidden states (larger than keys/values), so its direct default is larger (issue 14)."""
    from prefixtune.parametrizations import parametrization_class

    rates = {m: parametrization_class(m).default_learning_rate for m in ("prefix", "kv", "prompt")}
    assert rates == {"prefix": 3e-2, "kv": 1e-2, "prompt": 5e-3}
    cfg = TrainConfig(data="x")
    assert cfg.resolved_learning_rate(has_reparam=False, method_default=rates["prefix"]) == 3e-2
    assert cfg.resolved_learning_rate(has_reparam=True, method_default=rates["prefix"]) == 1e-4
    assert cfg.replace(learning_rate=3e-3).resolved_learning_rate(False, rates["prefix"]) == 3e-3


def test_reparam_adapter_trains_and_saves_folded(tiny_llama_dir, sentiment_files, tmp_path):
    cfg = _config(tiny_llama_dir, sentiment_files, tmp_path / "run", max_steps=4, eval_every=0, learning_rate=1e-3)
    result = run_training(cfg, PrefixConfig(num_virtual_tokens=4, reparam_hidden=16, seed=0))
    model, _ = load_model(tiny_llama_dir)
    pm = pt.load_adapter(model, result.adapter_dir)
    assert pm.adapter_config().reparam_hidden is None  # folded on save
    assert pm.num_trainable_parameters() == 3 * 4 * 32


def test_gradient_checkpointing_gives_the_same_training(tiny_llama_dir, sentiment_files, tmp_path):
    runs = [
        run_training(
            _config(
                tiny_llama_dir,
                sentiment_files,
                tmp_path / f"gc{flag}",
                max_steps=3,
                eval_every=0,
                gradient_checkpointing=flag,
            ),
            ADAPTER,
        )
        for flag in (False, True)
    ]
    a, b = (_adapter_tensors(r.adapter_dir) for r in runs)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
