"""`prefixtune train` on encoder-decoders (issue 12, item 4): prompt -> encoder, completion -> decoder labels."""

from __future__ import annotations

import json
import random

import pytest
import torch

import prefixtune as pt
from prefixtune.cli.main import main
from prefixtune.errors import ConfigError
from prefixtune.train.config import TrainConfig
from prefixtune.train.data import IGNORE_INDEX
from prefixtune.train.formats import TaskFormat, parse_record
from prefixtune.train.run import run_training
from prefixtune.train.seq2seq import Seq2SeqCollator, encode_seq2seq_example
from tests.seq2seq_models import FAMILIES, make_seq2seq, save_tiny_seq2seq
from tests.train.conftest import make_tokenizer, write_jsonl


def _copy_rows(n: int, seed: int) -> list[dict[str, str]]:
    """A toy seq2seq task: the completion repeats the prompt's two letters."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        word = rng.choice("abcd") + rng.choice("xyz")
        rows.append({"prompt": f"copy {word}", "completion": word})
    return rows


def test_labels_are_the_completion_and_the_decoder_is_teacher_forced() -> None:
    tok = make_tokenizer()
    example = parse_record({"prompt": "copy ax", "completion": "ax"}, TaskFormat("completion"), "r:1", tok)
    enc = encode_seq2seq_example(example, tok, decoder_start_token_id=0)
    target = tok("ax" + tok.eos_token, add_special_tokens=False)["input_ids"]
    assert list(enc.input_ids) == tok("copy ax")["input_ids"]
    assert list(enc.decoder_input_ids) == [0, *target[:-1]]  # teacher forcing: the target shifted right
    assert list(enc.labels) == target
    other = encode_seq2seq_example(
        parse_record({"prompt": "p", "completion": "abcd"}, TaskFormat("completion"), "r:2", tok), tok, 0
    )
    batch = Seq2SeqCollator(tok.pad_token_id)([enc, other])
    assert batch["decoder_attention_mask"][0].tolist() == [1, 1, 1, 0, 0]  # right padding
    assert batch["labels"][0, 3:].tolist() == [IGNORE_INDEX] * 2


@pytest.mark.parametrize("family", FAMILIES)
def test_training_lowers_the_loss_and_evaluates_with_bleu_and_rouge(family: str, tmp_path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", _copy_rows(16, seed=0))
    valid = write_jsonl(tmp_path / "valid.jsonl", _copy_rows(4, seed=1))
    model, tok = make_seq2seq(family), make_tokenizer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(
        data=str(train), eval_data=str(valid), output_dir=str(tmp_path / "run"), max_steps=12, eval_every=6,
        log_every=1, batch_size=4, learning_rate=0.05, progress=False,
    )  # fmt: skip
    result = run_training(
        config, pt.PrefixConfig(method="prefix", num_virtual_tokens=3, sites=("encoder", "cross")), model=model,
        tokenizer=tok,
    )  # fmt: skip
    lines = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
    losses = [r["loss"] for r in lines if "loss" in r]
    assert losses[-1] < losses[0]
    assert {"base_bleu", "base_rougeL"} <= set(lines[0])  # the bare model's score, by the same code
    evals = [r for r in lines if "eval_rougeL" in r]
    assert [r["step"] for r in evals] == [6, 12] and all("eval_bleu" in r for r in evals)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    saved = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert saved["config"]["sites"] == ["encoder", "cross"] and saved["position_convention"] == "unshifted"
    assert saved["metadata"]["task"]["kind"] == "completion"


def test_classification_is_refused_on_an_encoder_decoder(tmp_path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    config = TrainConfig(data=str(train), output_dir=str(tmp_path / "run"), max_steps=1, progress=False)
    with pytest.raises(ConfigError, match="not built for encoder-decoders"):
        run_training(config, pt.PrefixConfig(method="kv", num_virtual_tokens=2), model=make_seq2seq("t5"),
                     tokenizer=make_tokenizer())  # fmt: skip


def test_cli_train_eval_generate_on_t5(capsys, tmp_path) -> None:
    model_dir = save_tiny_seq2seq("t5", tmp_path / "tiny-t5")
    train = write_jsonl(tmp_path / "train.jsonl", _copy_rows(8, seed=0))
    valid = write_jsonl(tmp_path / "valid.jsonl", _copy_rows(4, seed=1))
    out = tmp_path / "run"
    code = main([str(a) for a in (
        "train", "--model", model_dir, "--data", train, "--eval-data", valid, "--output-dir", out,
        "--max-steps", "4", "--eval-every", "2", "--batch-size", "4", "--num-virtual-tokens", "2",
        "--method", "kv", "--sites", "decoder,cross", "--no-progress",
    )])  # fmt: skip
    stdout = capsys.readouterr().out
    assert code == 0 and "rougeL" in stdout
    code = main(["eval", "--adapter", str(out / "adapter"), "--data", str(valid), "--json"])
    metrics = json.loads(capsys.readouterr().out)
    assert code == 0 and {"bleu", "rougeL", "exact_match"} <= set(metrics) and metrics["n"] == 4
    code = main(["generate", "--adapter", str(out / "adapter"), "copy ax", "--max-new-tokens", "3", "--raw"])
    assert code == 0
