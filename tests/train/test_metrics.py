"""Metrics and evaluation: option scoring equals a direct computation, classic metrics, generation tasks."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from prefixtune.train.data import infer_format, parse_records, read_jsonl
from prefixtune.train.evaluate import evaluate, logits_fn_for
from prefixtune.train.metrics import accuracy, bleu, exact_match, macro_f1, rouge_l, score_options
from tests.conftest import make_model
from tests.train.conftest import sentiment_rows, write_jsonl


def _direct_score(model, prompt: list[int], option: list[int]) -> float:
    ids = torch.tensor([prompt + option])
    logp = model(input_ids=ids).logits[0].log_softmax(-1)
    return sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(option))


@pytest.mark.parametrize("options", [[[5], [9]], [[5, 6, 7], [9]]])
def test_score_options_equals_direct_log_likelihood(options):
    model = make_model("llama")
    prompts = [[1, 10, 11, 12], [1, 20], [1, 30, 31, 32, 33, 34]]
    fn = logits_fn_for(model, None)
    with torch.no_grad():
        scores = score_options(fn, prompts, options, pad_token_id=0, batch_size=2)
        expected = torch.tensor([[_direct_score(model, p, o) for o in options] for p in prompts])
    assert torch.allclose(scores, expected, atol=1e-4)


def test_adapter_none_row_is_the_bare_model():
    model = make_model("gpt2")
    pm = pt.attach(model, pt.PrefixConfig(num_virtual_tokens=3, seed=0))
    ids, mask = torch.tensor([[1, 5, 6, 7]]), torch.ones(1, 4, dtype=torch.long)
    with torch.no_grad():
        bare = model(input_ids=ids, attention_mask=mask).logits
        none_row = logits_fn_for(pm, None)(ids, mask)
        adapted = logits_fn_for(pm, "default")(ids, mask)
    assert torch.allclose(bare, none_row, atol=1e-5)
    assert not torch.allclose(bare, adapted, atol=1e-3)


def test_classification_metrics():
    gold = ["a", "a", "b", "b"]
    assert accuracy(["a", "b", "b", "b"], gold) == 0.75
    # F1(a) = 2/3, F1(b) = 4/5
    assert macro_f1(["a", "b", "b", "b"], gold, ["a", "b"]) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert macro_f1(["b"] * 4, gold, ["a", "b"]) == pytest.approx((0 + 2 / 3) / 2)


def test_generation_metrics():
    assert exact_match([" yes ", "no"], ["yes", "yes"]) == 0.5
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert rouge_l(["the cat sat"], ["the cat sat on the mat"]) == pytest.approx(2 * 1 * 0.5 / 1.5)


def test_evaluate_classification_and_generation_tasks(tmp_path, tokenizer):
    model = make_model("llama")
    pm = pt.attach(model, pt.PrefixConfig(num_virtual_tokens=2, seed=0))
    records = list(read_jsonl(write_jsonl(tmp_path / "c.jsonl", sentiment_rows(6))))
    fmt = infer_format(records)
    result = evaluate(pm, tokenizer, parse_records(records, fmt, tokenizer), fmt, adapter_name="default")
    assert set(result.metrics) == {"accuracy", "macro_f1", "n"} and result.metrics["n"] == 6
    assert set(result.predictions) <= {"pos", "neg"}

    rows = [{"prompt": f"Q{i}:", "completion": " ok"} for i in range(3)]
    records = list(read_jsonl(write_jsonl(tmp_path / "g.jsonl", rows)))
    fmt = infer_format(records)
    result = evaluate(pm, tokenizer, parse_records(records, fmt, tokenizer), fmt, max_new_tokens=4)
    assert set(result.metrics) == {"exact_match", "bleu", "rougeL", "n"} and len(result.predictions) == 3
