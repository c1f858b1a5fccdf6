"""Data parsing: every format, every error case, skip counting, loss masking and collation."""

from __future__ import annotations

import pytest
import torch

from prefixtune.errors import ConfigError, DataError
from prefixtune.train.collate import Collator
from prefixtune.train.data import (
    IGNORE_INDEX,
    SkipReport,
    encode_example,
    encode_examples,
    encode_prompt,
    infer_format,
    parse_records,
    read_jsonl,
)
from prefixtune.train.formats import TaskFormat
from tests.train.conftest import write_jsonl


def _records(tmp_path, rows):
    return list(read_jsonl(write_jsonl(tmp_path / "d.jsonl", rows)))


# -- reading -----------------------------------------------------------------------------------------------


def test_read_jsonl_names_file_and_line_of_bad_json(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": "x"}, "", "{not json"])
    with pytest.raises(DataError, match=r"d\.jsonl:3: not valid JSON"):
        list(read_jsonl(path))


def test_read_jsonl_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(DataError, match="empty"):
        list(read_jsonl(tmp_path / "empty.jsonl"))
    with pytest.raises(DataError, match="no such data file"):
        list(read_jsonl(tmp_path / "missing.jsonl"))


# -- formats -----------------------------------------------------------------------------------------------


def test_classification_default_verbalizer_and_template(tmp_path, tokenizer):
    records = _records(tmp_path, [{"text": "nice", "label": "pos"}, {"text": "meh", "label": 0}])
    fmt = infer_format(records)
    assert fmt.kind == "classification"
    assert fmt.verbalizer == {"0": " 0", "pos": " pos"}
    (ex, ex2) = parse_records(records, fmt, tokenizer)
    assert ex.prompt == "nice\nLabel:" and ex.label == "pos"
    assert [s.has_loss for s in ex.segments] == [False, True] and ex.segments[1].text == " pos"
    assert ex2.label == "0"  # numbers become label strings


def test_classification_custom_template_and_unknown_label(tmp_path, tokenizer):
    records = _records(tmp_path, [{"text": "nice", "label": "pos"}, {"text": "bad", "label": "neutral"}])
    fmt = infer_format(records, template="Review: {text}\nSentiment:", verbalizer={"pos": " good", "neg": " bad"})
    with pytest.raises(DataError, match=r"d\.jsonl:2: label 'neutral' is not in the verbalizer"):
        parse_records(records, fmt, tokenizer)
    skips = SkipReport()
    (ex,) = parse_records(records, fmt, tokenizer, skips)
    assert ex.prompt == "Review: nice\nSentiment:" and ex.segments[1].text == " good"
    assert skips.count == 1 and "d.jsonl:2" in skips.summary()


def test_completion_format_appends_eos(tmp_path, tokenizer):
    records = _records(tmp_path, [{"prompt": "Q: 1+1?\nA:", "completion": " 2"}])
    fmt = infer_format(records)
    (ex,) = parse_records(records, fmt, tokenizer)
    assert fmt.kind == "completion" and ex.reference == " 2"
    assert ex.segments[1].text == " 2" + tokenizer.eos_token and ex.prompt == "Q: 1+1?\nA:"


def test_chat_format_puts_loss_on_assistant_turns_only(tmp_path, tokenizer):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "ciao"},
    ]
    records = _records(tmp_path, [{"messages": messages}])
    fmt = infer_format(records)
    (ex,) = parse_records(records, fmt, tokenizer)
    loss_text = [s.text.rstrip("\n") for s in ex.segments if s.has_loss]
    assert loss_text == ["hello" + tokenizer.eos_token, "ciao" + tokenizer.eos_token]
    full = "".join(s.text for s in ex.segments)
    assert full == tokenizer.apply_chat_template(messages, tokenize=False)
    assert ex.prompt.endswith("user: bye\nassistant: ") and ex.reference == "ciao"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": 3, "label": "a"}, "field 'text' must be a string, got a int"),
        ({"text": "x"}, "field 'label' must be a string or number"),
        ({"prompt": "x"}, "field 'completion' must be a string, got missing"),
        ({"prompt": "x", "completion": ""}, "'completion' is empty"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant message"),
        ({"messages": [{"role": "bot", "content": "hi"}]}, "has role 'bot'"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "starts with an assistant message"),
        ({"foo": 1}, "cannot tell the format"),
        ([1, 2], "expected a JSON object, got list"),
    ],
)
def test_invalid_records_name_file_and_line(tmp_path, tokenizer, row, message):
    kind = {"text": "classification", "prompt": "completion", "messages": "chat"}
    key = next((k for k in kind if isinstance(row, dict) and k in row), "text")
    fmt = TaskFormat(kind=kind[key], verbalizer={"a": " a"})
    records = _records(tmp_path, [row])
    with pytest.raises(DataError, match=r"d\.jsonl:1: .*" + message.replace("(", r"\(").replace("[", r"\[")):
        parse_records(records, fmt, tokenizer)


def test_mixed_formats_are_an_error(tmp_path, tokenizer):
    records = _records(tmp_path, [{"text": "a", "label": "x"}, {"prompt": "p", "completion": "c"}])
    with pytest.raises(DataError, match=r"d\.jsonl:2: record is in completion format but the task is classification"):
        parse_records(records, infer_format(records), tokenizer)


def test_all_records_skipped_is_an_error_not_an_empty_dataset(tmp_path, tokenizer):
    records = _records(tmp_path, [{"text": "a"}, {"text": "b"}])
    with pytest.raises(DataError, match=r"no valid records left.*skipped 2"):
        parse_records(records, TaskFormat(kind="classification", verbalizer={"x": " x"}), tokenizer, SkipReport())


def test_task_format_validation_and_round_trip():
    with pytest.raises(ConfigError) as err:
        TaskFormat(kind="regression", template="no placeholder")
    assert len(err.value.problems) == 1
    with pytest.raises(ConfigError, match="no \\{text\\} placeholder"):
        TaskFormat(kind="classification", template="no placeholder")
    fmt = TaskFormat(kind="classification", template="T: {text} =", verbalizer={"b": " B", "a": " A"})
    assert TaskFormat.from_dict(fmt.to_dict()) == fmt
    assert fmt.labels == ("b", "a")


# -- encoding and masking ------------------------------------------------------------------------------------


def test_prompt_tokens_get_no_loss(tmp_path, tokenizer):
    records = _records(tmp_path, [{"prompt": "abc", "completion": "de"}])
    (ex,) = parse_records(records, infer_format(records), tokenizer)
    enc = encode_example(ex, tokenizer)
    n_prompt = len(tokenizer("abc")["input_ids"])
    assert list(enc.labels[:n_prompt]) == [IGNORE_INDEX] * n_prompt
    assert list(enc.labels[n_prompt:]) == list(enc.input_ids[n_prompt:])
    assert tokenizer.decode(enc.input_ids[n_prompt:]) == "de" + tokenizer.eos_token
    assert encode_prompt(ex, tokenizer) == list(enc.input_ids[:n_prompt])


def test_max_length_is_an_error_or_a_counted_skip(tmp_path, tokenizer):
    records = _records(tmp_path, [{"text": "short", "label": "a"}, {"text": "x" * 50, "label": "a"}])
    fmt = infer_format(records)
    examples = parse_records(records, fmt, tokenizer)
    with pytest.raises(DataError, match=r"d\.jsonl:2: \d+ tokens exceed --max-length 20"):
        encode_examples(examples, tokenizer, 20)
    skips = SkipReport()
    assert len(encode_examples(examples, tokenizer, 20, skips)) == 1
    assert skips.count == 1


@pytest.mark.parametrize("side", ["left", "right"])
def test_collator_pads_with_no_attention_and_no_loss(tmp_path, tokenizer, side):
    records = _records(tmp_path, [{"prompt": "ab", "completion": "c"}, {"prompt": "abcdef", "completion": "gh"}])
    examples = parse_records(records, infer_format(records), tokenizer)
    encoded = encode_examples(examples, tokenizer, None)
    batch = Collator(tokenizer.pad_token_id, padding_side=side)(encoded)
    assert batch["input_ids"].shape == (2, len(encoded[1].input_ids))
    short = len(encoded[0].input_ids)
    pad_cols = slice(0, 9 - short) if side == "left" else slice(short, None)
    width = batch["input_ids"].shape[1]
    pad_cols = slice(0, width - short) if side == "left" else slice(short, width)
    assert (batch["attention_mask"][0, pad_cols] == 0).all()
    assert (batch["labels"][0, pad_cols] == IGNORE_INDEX).all()
    assert (batch["input_ids"][0, pad_cols] == tokenizer.pad_token_id).all()
    real = batch["attention_mask"][0].bool()
    assert batch["input_ids"][0, real].tolist() == list(encoded[0].input_ids)
    assert batch["labels"][0, real].tolist() == list(encoded[0].labels)
    assert batch["labels"].dtype == torch.long
