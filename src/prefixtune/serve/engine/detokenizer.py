"""Incremental detokenization with stop strings (pure Python; the tokenizer is passed as a function).

Each new token decodes only a short window of recent token ids, never the whole output, so a request's
detokenization costs O(tokens) rather than O(tokens^2). The window starts a few tokens back (`prefix_offset`)
so that tokenizers whose decoding depends on the neighbours (SentencePiece's leading space, byte-level BPE's
multi-byte characters) see the same context as a full decode; the new text is the window's text minus the
text of its already-read part.

Text is emitted only when it can no longer change: an incomplete UTF-8 sequence (decoded as a trailing
replacement character) and a trailing partial match of a stop string are held back until later tokens decide.
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
        self.is_stopped = False
        # Decoded text that later tokens can no longer change, not yet returned. A stop string can only start
        # here: returned text never ends with the beginning of one (that is held back).
        self._pending = ""
        self._prefix_offset = 0  # the window token_ids[prefix_offset:] is decoded for each new token ...
        self._read_offset = 0  # ... and its part [prefix_offset:read_offset] is already decoded text

    def add(self, token_id: int) -> str:
        """Add one token; returns the new safe text (possibly empty). Sets `is_stopped` on a stop string."""
        self.token_ids.append(token_id)
        self._pending += self._new_text(final=False)
        return self._release(final=False)

    def flush(self) -> str:
        """All text not yet returned (at the end of generation)."""
        if self.is_stopped or not self.token_ids:
            return ""
        self._pending += self._new_text(final=True)
        return self._release(final=True)

    def _new_text(self, final: bool) -> str:
        """The text the latest tokens add, or "" while it may still change (an incomplete character)."""
        window = self.token_ids[self._prefix_offset :]
        read = self._read_offset - self._prefix_offset
        known = self.decode(window[:read]) if read else ""
        full = self.decode(window)
        if len(full) <= len(known) or (full.endswith("\ufffd") and not final):
            return ""
        self._prefix_offset, self._read_offset = self._read_offset, len(self.token_ids)
        return full[len(known) :]

    def _release(self, final: bool) -> str:
        """Return pending text up to a stop string, holding back what might still begin one."""
        hits = [i for i in (self._pending.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.is_stopped = True
            out, self._pending = self._pending[: min(hits)], ""
            return out
        keep = 0 if final else self._held_back()
        cut = len(self._pending) - keep
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def _held_back(self) -> int:
        """How many trailing characters of the pending text might start a stop string."""
        longest = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self._pending)), 0, -1):
                if self._pending.endswith(s[:k]):
                    longest = max(longest, k)
                    break
        return longest
