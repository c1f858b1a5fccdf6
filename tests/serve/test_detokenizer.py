"""Incremental detokenization: deltas add up to the whole text; stop strings cut it, even across tokens."""

from __future__ import annotations

import pytest

from prefixtune.serve.engine.detokenizer import IncrementalDetokenizer

CHARS = "abcdefghij XYZ\ufffd"


def decode(ids: list[int]) -> str:
    return "".join(CHARS[i] for i in ids)


def ids(text: str) -> list[int]:
    return [CHARS.index(c) for c in text]


def run(text: str, stop: tuple[str, ...] = ()) -> tuple[str, bool]:
    d = IncrementalDetokenizer(decode, stop)
    out = ""
    for t in ids(text):
        out += d.add(t)
        if d.is_stopped:
            return out, True
    return out + d.flush(), False


def test_deltas_add_up_to_the_whole_text():
    assert run("abc def") == ("abc def", False)


def test_stop_string_spanning_tokens_is_cut_and_never_emitted():
    d = IncrementalDetokenizer(decode, ("de",))
    emitted = [d.add(t) for t in ids("abcd")]
    assert "".join(emitted) == "abc"  # "d" held back: it may start "de"
    assert d.add(ids("e")[0]) == "" and d.is_stopped
    assert run("abcdefg", ("de", "b")) == ("a", True)


def test_held_back_prefix_is_released_when_it_does_not_match():
    assert run("abcdX", ("dY",)) == ("abcdX", False)


def test_incomplete_character_is_held_until_complete():
    d = IncrementalDetokenizer(decode)
    assert d.add(ids("a")[0]) == "a"
    assert d.add(CHARS.index("\ufffd")) == ""
    assert d.flush() == "\ufffd"


def _trained_tokenizer(kind: str):
    """A real `tokenizers` tokenizer trained here: byte-level BPE (GPT-2 style) or Metaspace (SentencePiece style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>" if kind == "metaspace" else None))
    if kind == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        alphabet = []
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=alphabet, special_tokens=["<unk>"])
    tok.train_from_iterator([CORPUS] * 20, trainer)
    return tok


CORPUS = "The café serves crème brûlée, 日本語のテキスト and emoji 🙂🚀 to everyone. Ünïcödé  spaces\tand\nlines. "


@pytest.mark.parametrize("kind", ["bytelevel", "metaspace"])
def test_real_tokenizer_deltas_equal_a_full_decode_and_decode_windows_stay_short(kind):
    tok = _trained_tokenizer(kind)
    token_ids = tok.encode(CORPUS * 20).ids
    windows = []

    def decode(ids):
        windows.append(len(ids))
        return tok.decode(ids)

    d = IncrementalDetokenizer(decode)
    out = "".join(d.add(t) for t in token_ids) + d.flush()
    assert out == tok.decode(token_ids)
    assert len(token_ids) > 200 and max(windows) <= 12  # never the whole output: linear, not quadratic


def test_stop_string_across_multibyte_tokens_with_a_real_tokenizer():
    tok = _trained_tokenizer("bytelevel")
    token_ids = tok.encode(CORPUS).ids
    d = IncrementalDetokenizer(tok.decode, ("🚀",))
    out = ""
    for t in token_ids:
        out += d.add(t)
        if d.is_stopped:
            break
    assert d.is_stopped and out == tok.decode(token_ids).split("🚀")[0]
