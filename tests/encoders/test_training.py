"""Encoders through `prefixtune train` (issue 12, item 4): classification and token classification through
the task head, with the same progress, metrics, eval and resume as causal LMs; bad records are clear errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

import prefixtune as pt
from prefixtune.cli.main import main
from prefixtune.encoder_models import load_encoder_for_adapter
from prefixtune.errors import DataError
from prefixtune.train.config import TrainConfig
from prefixtune.train.evaluate import evaluate
from prefixtune.train.formats import TaskFormat
from prefixtune.train.loop import Trainer
from prefixtune.train.run import load_task_data, run_training
from tests.encoders.models import encoder_config
from tests.train.conftest import make_tokenizer, sentiment_rows, write_jsonl


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BertModel (no head: training adds one) with the character tokenizer."""
    directory = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    transformers.BertModel(encoder_config("bert")).save_pretrained(directory)
    make_tokenizer().save_pretrained(directory)
    return directory


def tagging_rows(n: int, seed: int) -> list[dict]:
    """Words tagged by their first letter: 'x...' is NAME, anything else O (learnable by a tiny model)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens = [rng.choice(["xa", "xb", "ab", "cd", "ef"]) for _ in range(rng.randint(2, 5))]
        rows.append({"tokens": tokens, "tags": ["NAME" if t[0] == "x" else "O" for t in tokens]})
    return rows


def _config(model_dir: Path, train: Path, valid: Path, out: Path, **kw) -> TrainConfig:
    options = {"max_steps": 30, "eval_every": 15, "batch_size": 8, "learning_rate": 2e-2, "progress": False}
    return TrainConfig(
        model=str(model_dir), data=str(train), eval_data=str(valid), output_dir=str(out), **{**options, **kw}
    )


def test_classification_trains_prefix_and_head(tiny_bert_dir, tmp_path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(64, seed=0))
    valid = write_jsonl(tmp_path / "valid.jsonl", sentiment_rows(16, seed=1))
    adapter = pt.PrefixConfig(method="prefix", num_virtual_tokens=4, seed=0, train_head=True)
    result = run_training(_config(tiny_bert_dir, train, valid, tmp_path / "run"), adapter)
    losses = [r["loss"] for r in result.loop.history if "loss" in r]
    assert losses[-1] < losses[0]
    assert result.loop.metric == "accuracy" and result.loop.best_metric >= 0.9
    assert "accuracy" in result.loop.base_metrics  # the bare model (its random head) scored first
    assert (result.adapter_dir / "head.safetensors").is_file()
    assert result.trainable_parameters == 2 * 4 * 32 + 2 * 32 + 2  # prefix + the 2-label classifier
    metrics = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
    assert any("eval_accuracy" in m for m in metrics) and result.curve_path.is_file()
    task = json.loads((result.adapter_dir / "adapter_config.json").read_text())["metadata"]["task"]
    assert task["labels"] == ["neg", "pos"]
    # The saved adapter, on the encoder loaded anew with the head it records (a fresh random one), classifies
    # the validation set as the run's best evaluation did.
    model, tokenizer = load_encoder_for_adapter(tiny_bert_dir, result.adapter_dir)
    pm = pt.load_adapter(model, result.adapter_dir)
    examples = load_task_data(_config(tiny_bert_dir, train, valid, tmp_path / "x"), tokenizer).validation
    fmt = TaskFormat.from_dict(task)
    assert evaluate(pm, tokenizer, examples, fmt, adapter_name="default").metrics["accuracy"] == result.loop.best_metric


def test_resume_equals_an_uninterrupted_run(tiny_bert_dir, tmp_path, monkeypatch) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(32, seed=0))
    valid = write_jsonl(tmp_path / "valid.jsonl", sentiment_rows(8, seed=1))
    adapter = pt.PrefixConfig(method="kv", num_virtual_tokens=2, seed=0, train_head=True)
    whole = _config(tiny_bert_dir, train, valid, tmp_path / "whole", max_steps=10, eval_every=5)
    run_training(whole, adapter)
    part = whole.replace(output_dir=str(tmp_path / "part"))
    original = Trainer._eval_and_checkpoint

    def interrupt_after_checkpoint(self):
        original(self)
        if self.state.step == 5:
            raise KeyboardInterrupt  # the process dies right after the step-5 checkpoint

    monkeypatch.setattr(Trainer, "_eval_and_checkpoint", interrupt_after_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run_training(part, adapter)
    monkeypatch.setattr(Trainer, "_eval_and_checkpoint", original)
    run_training(part.replace(resume=True), adapter)
    for name in ("adapter.safetensors", "head.safetensors"):
        a = load_file(str(tmp_path / "whole" / "adapter" / name))
        b = load_file(str(tmp_path / "part" / "adapter" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_token_classification_trains_the_tagger(tiny_bert_dir, tmp_path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", tagging_rows(64, seed=0))
    valid = write_jsonl(tmp_path / "valid.jsonl", tagging_rows(16, seed=1))
    adapter = pt.PrefixConfig(num_virtual_tokens=4, seed=0, train_head=True)
    result = run_training(_config(tiny_bert_dir, train, valid, tmp_path / "run", max_steps=40, eval_every=20), adapter)
    assert result.loop.metric == "macro_f1"
    assert result.loop.best_metric > result.loop.base_metrics["macro_f1"] and result.loop.best_metric >= 0.9
    task = json.loads((result.adapter_dir / "adapter_config.json").read_text())["metadata"]["task"]
    assert task["kind"] == "token_classification" and task["tags"] == ["NAME", "O"]


def test_tags_that_do_not_match_tokens_are_a_clear_error(tiny_bert_dir, tmp_path) -> None:
    rows = [*tagging_rows(4, seed=0), {"tokens": ["xa", "ab", "cd"], "tags": ["NAME", "O"]}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError, match=r"train\.jsonl:5: 2 tags for 3 tokens; give exactly one tag per token"):
        run_training(_config(tiny_bert_dir, train, train, tmp_path / "run"), pt.PrefixConfig(num_virtual_tokens=2))


def test_completion_data_on_an_encoder_is_refused(tiny_bert_dir, tmp_path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "completion": "b"}])
    with pytest.raises(DataError, match="an encoder trains classification"):
        run_training(_config(tiny_bert_dir, train, train, tmp_path / "run"), pt.PrefixConfig(num_virtual_tokens=2))


def test_cli_train_on_an_encoder(tiny_bert_dir, tmp_path, capsys) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(16, seed=0))
    argv = ["train", "--model", tiny_bert_dir, "--data", train, "--eval-data", train, "--output-dir", tmp_path / "r"]
    argv += ["--max-steps", "4", "--eval-every", "2", "--num-virtual-tokens", "2", "--train-head", "--no-progress"]
    assert main([str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    assert "best validation accuracy" in out and (tmp_path / "r" / "adapter" / "head.safetensors").is_file()


def test_cli_eval_of_an_encoder_adapter_equals_the_library(tiny_bert_dir, tmp_path, capsys) -> None:
    """`prefixtune eval` loads an encoder adapter with the head it was trained for (its labels, its own head)
    and reports what `evaluate` reports for the same adapter loaded in Python."""
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(16, seed=0))
    valid = write_jsonl(tmp_path / "valid.jsonl", sentiment_rows(12, seed=3))
    argv = ["train", "--model", tiny_bert_dir, "--data", train, "--eval-data", train, "--output-dir", tmp_path / "r"]
    argv += ["--max-steps", "4", "--eval-every", "0", "--num-virtual-tokens", "2", "--train-head", "--no-progress"]
    assert main([str(a) for a in argv]) == 0
    adapter = tmp_path / "r" / "adapter"
    capsys.readouterr()
    assert main(["eval", "--adapter", str(adapter), "--model", str(tiny_bert_dir), "--data", str(valid), "--json"]) == 0
    reported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    model, tokenizer = load_encoder_for_adapter(tiny_bert_dir, adapter)
    pm = pt.load_adapter(model, adapter, adapter_name="a", tokenizer=tokenizer)
    fmt = TaskFormat.from_dict(pm.adapter_metadata("a")["task"])
    examples = load_task_data(_config(tiny_bert_dir, train, valid, tmp_path / "x"), tokenizer).validation
    expected = evaluate(pm, tokenizer, examples, fmt, adapter_name="a").metrics
    assert reported["accuracy"] == pytest.approx(expected["accuracy"]) and reported["n"] == 12
