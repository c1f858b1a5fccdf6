"""Incremental detokenization: deltas add up to the whole text; stop strings cut it, even across tokens."""

from __future__ import annotations

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
