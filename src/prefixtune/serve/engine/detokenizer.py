"""Incremental detokenization with stop strings (pure Python; the tokenizer is passed as a function).

Text is emitted only when it can no longer change: a trailing replacement character (an incomplete UTF-8
sequence) and a trailing partial match of a stop string are held back until the next token decides them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class IncrementalDetokenizer:
    """Turns a growing list of generated token ids into text deltas, cutting at the first stop string.

    Args:
        decode: token ids -> text (special tokens skipped).
        stop: stop strings; the returned text ends before the first one.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()) -> None:
        self.decode = decode
        self.stop = tuple(s for s in stop if s)
        self.token_ids: list[int] = []
        self.emitted = 0  # characters already returned
        self.is_stopped = False

    def add(self, token_id: int) -> str:
        """Add one token; returns the new safe text (possibly empty). Sets `is_stopped` on a stop string."""
        self.token_ids.append(token_id)
        text = self.decode(self.token_ids)
        cut = self._find_stop(text)
        if cut is not None:
            self.is_stopped = True
            return self._emit(text[:cut])
        safe = len(text) - self._held_back(text)
        return self._emit(text[:safe])

    def flush(self) -> str:
        """All text not yet returned (at the end of generation)."""
        if self.is_stopped or not self.token_ids:
            return ""
        return self._emit(self.decode(self.token_ids))

    def _emit(self, text: str) -> str:
        delta = text[self.emitted :] if len(text) > self.emitted else ""
        self.emitted = max(self.emitted, len(text))
        return delta

    def _find_stop(self, text: str) -> int | None:
        if not self.stop:
            return None
        start = max(0, self.emitted - max(len(s) for s in self.stop))
        hits = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _held_back(self, text: str) -> int:
        """How many trailing characters might still change or start a stop string."""
        if text.endswith("\ufffd"):
            return len(text) - self.emitted
        longest = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    longest = max(longest, k)
                    break
        return longest
