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


# ----- multi-reference generation metrics (issue 13, part 3) ---------------------------------------------
def test_multi_reference_bleu_is_sacrebleus_reference_streams():
    import sacrebleu

    predictions = ["the cat sat on the mat", "a dog runs in the park", "it rains today"]
    references = [
        ["the cat is on the mat", "a cat sat on the mat"],
        ["a dog is running in a park", "the dog runs in the park"],
        ["today it rains", "it is raining today"],
    ]
    streams = [[refs[k] for refs in references] for k in range(2)]
    assert bleu(predictions, references) == pytest.approx(sacrebleu.corpus_bleu(predictions, streams).score)
    single = bleu(predictions, [refs[0] for refs in references])
    assert bleu(predictions, references) > single  # the second references match more n-grams


def test_a_variable_number_of_references_and_best_match_rouge_and_exact_match():
    from prefixtune.train.metrics import generation_metric_settings, generation_metrics

    predictions = ["the cat sat on the mat", "a dog"]
    references = [["something else entirely", "the cat sat on the mat"], "a dog"]  # 2 references, then 1
    assert bleu(predictions, references) == pytest.approx(100.0)
    assert rouge_l(["the cat sat"], [["the cat sat on the mat", "the cat sat"]]) == pytest.approx(1.0)
    assert exact_match([" a dog "], [["a cat", "a dog"]]) == 1.0
    metrics = generation_metrics(predictions, references)
    assert metrics["exact_match"] == 1.0 and metrics["rougeL"] == pytest.approx(1.0)
    settings = generation_metric_settings(predictions, references)
    assert settings["bleu"].startswith("nrefs:var|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert "use_stemmer=True" in settings["rougeL"] and "best reference" in settings["rougeL"]


def test_completion_records_carry_their_references(tmp_path, tokenizer):
    from prefixtune.errors import DataError

    rows = [{"prompt": "name[Aromi]", "completion": " Aromi.", "references": [" Aromi.", " It is Aromi."]}]
    records = list(read_jsonl(write_jsonl(tmp_path / "r.jsonl", rows)))
    (example,) = parse_records(records, infer_format(records), tokenizer)
    assert example.references == (" Aromi.", " It is Aromi.") and example.reference == " Aromi."
    bad = list(read_jsonl(write_jsonl(tmp_path / "b.jsonl", [{**rows[0], "references": " Aromi."}])))
    with pytest.raises(DataError, match="'references' must be a non-empty list of strings"):
        parse_records(bad, infer_format(bad), tokenizer)


def test_eval_json_reports_multi_reference_metrics_with_their_settings(tmp_path, tiny_llama_dir, capsys):
    import json

    from prefixtune.cli.main import main

    rows = [
        {"prompt": f"Q{i}:", "completion": " ok", "references": [" ok", " fine", " yes"][: 1 + i % 3]} for i in range(4)
    ]
    data = write_jsonl(tmp_path / "refs.jsonl", rows)
    argv = ["eval", "--adapter", "none", "--model", str(tiny_llama_dir), "--data", str(data), "--json"]
    argv += ["--max-new-tokens", "3"]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"exact_match", "bleu", "rougeL", "n"} <= set(metrics) and metrics["n"] == 4
    assert metrics["settings"]["bleu"].startswith("nrefs:var|")
