"""The `task` initialization (issue 14): training starts a decoder-only adapter from the task's own examples.

What it picks (the shortest example of each label, label word included; the four shortest completions, without
the end-of-sequence token), that `run_training` records it in the adapter it saves by default, and that
attaching without training data, an explicit init, or an old adapter file keeps its own init.
"""

from __future__ import annotations

import json

import pytest

import prefixtune as pt
from prefixtune.config import PrefixConfig
from prefixtune.errors import ConfigError, DataError
from prefixtune.models import load_model
from prefixtune.train.data import parse_records, resolve_task_format
from prefixtune.train.run import load_task_data, run_training
from prefixtune.train.task_init import resolve_init, task_init_text
from tests.conftest import make_model
from tests.train.conftest import short_run_config


def _parsed(rows: list[dict], tokenizer):
    records = [(f"rows[{i}]", row) for i, row in enumerate(rows)]
    fmt = resolve_task_format(records, None)
    return parse_records(records, fmt, tokenizer), fmt


def _full(example) -> str:
    return "".join(segment.text for segment in example.segments)


def test_classification_takes_the_shortest_example_of_each_label_in_label_order(tokenizer):
    rows = [
        {"text": "a long positive review", "label": "pos"},
        {"text": "fine", "label": "pos"},
        {"text": "a rather long negative one", "label": "neg"},
        {"text": "bad film", "label": "neg"},
        {"text": "meh", "label": "mid"},
    ]
    examples, fmt = _parsed(rows, tokenizer)
    shortest = {e.text: e for e in examples}
    shortest_of = {"pos": "fine", "neg": "bad film", "mid": "meh"}
    expected = "".join(_full(shortest[shortest_of[label]]) + "\n" for label in fmt.labels)
    text = task_init_text(examples, fmt)
    assert text == expected
    for label in fmt.labels:
        assert fmt.verbalizer[label] in text  # the label word is part of the start, as in a few-shot prompt


def test_generation_takes_the_four_shortest_examples_without_the_eos(tokenizer):
    rows = [{"prompt": f"Q{i}:", "completion": " " + "x" * (10 - i)} for i in range(6)]
    examples, fmt = _parsed(rows, tokenizer)
    text = task_init_text(examples, fmt)
    assert text == "".join(f"Q{i}: {'x' * (10 - i)}\n" for i in (5, 4, 3, 2))
    assert tokenizer.eos_token not in text


def test_a_label_without_training_examples_is_named(tokenizer):
    examples, fmt = _parsed([{"text": "fine", "label": "pos"}, {"text": "bad", "label": "neg"}], tokenizer)
    with pytest.raises(DataError, match=r"'neg'.*--init vocab"):
        task_init_text([e for e in examples if e.label == "pos"], fmt)
    with pytest.raises(DataError, match="training data is empty"):
        task_init_text([], fmt)


def test_auto_is_task_on_decoder_only_models_and_explicit_inits_stay(tokenizer):
    examples, fmt = _parsed([{"text": "fine", "label": "pos"}, {"text": "bad", "label": "neg"}], tokenizer)
    auto = PrefixConfig(method="kv", num_virtual_tokens=4)
    resolved = resolve_init(auto, examples, fmt, decoder_only=True)
    assert resolved.init == "text" and resolved.init_text == task_init_text(examples, fmt)
    assert resolve_init(auto, examples, fmt, decoder_only=False) == auto  # built as vocab by attach
    assert resolve_init(auto.replace(init="task"), examples, fmt, decoder_only=False).init == "text"
    vocab = auto.replace(init="vocab")
    assert resolve_init(vocab, examples, fmt, decoder_only=True) == vocab


def test_training_starts_from_the_task_text_by_default_and_records_it(tiny_gpt2_dir, sentiment_files, tmp_path):
    cfg = short_run_config(tiny_gpt2_dir, sentiment_files, tmp_path / "run")
    result = run_training(cfg, PrefixConfig(method="kv", num_virtual_tokens=4, seed=0))
    saved = json.loads((result.adapter_dir / "adapter_config.json").read_text())["config"]
    _, tok = load_model(tiny_gpt2_dir)
    data = load_task_data(cfg, tok)
    assert saved["init"] == "text" and saved["init_text"] == task_init_text(data.train, data.fmt)
    assert json.loads((result.output_dir / "run_config.json").read_text())["adapter"]["init_text"] == saved["init_text"]

    explicit = run_training(cfg.replace(output_dir=str(tmp_path / "vocab")), PrefixConfig(method="kv", init="vocab"))
    assert json.loads((explicit.adapter_dir / "adapter_config.json").read_text())["config"]["init"] == "vocab"


def test_the_task_text_is_what_the_adapter_starts_from(tiny_gpt2_dir, sentiment_files, tmp_path):
    """The default start equals an explicit init='text' with the same text (and differs from vocab)."""
    cfg = short_run_config(tiny_gpt2_dir, sentiment_files, tmp_path / "run").replace(max_steps=1, learning_rate=1e-12)
    auto = run_training(cfg, PrefixConfig(method="kv", num_virtual_tokens=4, seed=0))
    model, tok = load_model(tiny_gpt2_dir)
    data = load_task_data(cfg, tok)
    start = task_init_text(data.train, data.fmt)
    text = PrefixConfig(method="kv", num_virtual_tokens=4, seed=0, init="text", init_text=start)
    by_hand = pt.attach(model, text, tokenizer=tok).compile()
    trained = pt.load_adapter(load_model(tiny_gpt2_dir)[0], auto.adapter_dir).compile()
    vocab = pt.attach(load_model(tiny_gpt2_dir)[0], text.replace(init="vocab", init_text=None)).compile()
    for layer in range(len(by_hand.keys)):
        assert (by_hand.keys[layer] - trained.keys[layer]).abs().max() < 1e-6
        assert (by_hand.values[layer] - trained.values[layer]).abs().max() < 1e-6
        assert (by_hand.keys[layer] - vocab.keys[layer]).abs().max() > 1e-3


def test_attach_without_training_data_builds_auto_as_vocab_and_refuses_task():
    pm = pt.attach(make_model("gpt2"), PrefixConfig(method="kv", num_virtual_tokens=4))
    assert pm.adapter_config().init == "vocab"  # what was run is what is recorded
    with pytest.raises(ConfigError, match=r"init='task'.*init_text=prefixtune\.train\.task_init\.task_init_text"):
        pt.attach(make_model("gpt2"), PrefixConfig(method="kv", num_virtual_tokens=4, init="task"))
