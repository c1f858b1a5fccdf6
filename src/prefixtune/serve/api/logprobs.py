"""Engine logprobs -> the OpenAI shapes: the legacy completions object and the chat `content` list.

Pure shaping (no torch, no engine state). Token strings are each token decoded alone (`Engine.token_strings`,
as vLLM does), so they may not concatenate to the text exactly (a multi-byte character split over tokens, a
tokenizer's leading space); `bytes` is their UTF-8 encoding. JSON has no infinity: a logprob of -inf (a token
the model gives no mass at all) is reported as -9999.0, as vLLM does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prefixtune.serve.api.protocol import ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob
from prefixtune.serve.engine.messages import TokenLogprobs

LOGPROB_FLOOR = -9999.0

TokenStrings = Callable[[Sequence[int]], list[str]]
Position = tuple[int, TokenLogprobs | None]
"""(token id, its logprobs); None for a prompt's first token, which nothing predicts."""


def finite(logprob: float) -> float:
    return max(logprob, LOGPROB_FLOOR)


def _strings(
    token_ids: Sequence[int], entries: Sequence[TokenLogprobs | None], strings: TokenStrings
) -> dict[int, str]:
    """id -> string for the tokens and every alternative listed, in one call."""
    ids = list(token_ids) + [i for e in entries if e is not None for i, _ in e.top]
    return dict(zip(ids, strings(ids), strict=True))


def completion_logprobs(
    positions: Sequence[Position], strings: TokenStrings, offset: int
) -> tuple[CompletionLogprobs, int]:
    """OpenAI's legacy logprobs object for these positions, and the text offset after them.

    `text_offset[i]` is `offset` plus the length of the token strings before position i (vLLM's definition;
    it indexes the text exactly when the token strings concatenate to it). `top_logprobs[i]` maps the k most
    likely tokens' strings to their logprobs, plus the chosen token when it is not among them (OpenAI: up to
    k + 1 entries), most likely first; when two tokens decode to the same string the higher logprob stays.
    """
    text = _strings([t for t, _ in positions], [e for _, e in positions], strings)
    out = CompletionLogprobs()
    for token_id, entry in positions:
        token = text[token_id]
        out.tokens.append(token)
        out.text_offset.append(offset)
        offset += len(token)
        if entry is None:
            out.token_logprobs.append(None)
            out.top_logprobs.append(None)
            continue
        out.token_logprobs.append(finite(entry.logprob))
        ranked = list(entry.top)
        if all(i != token_id for i, _ in ranked):
            ranked.append((token_id, entry.logprob))
        top: dict[str, float] = {}
        for i, value in sorted(ranked, key=lambda pair: -pair[1]):
            top.setdefault(text[i], finite(value))
        out.top_logprobs.append(top)
    return out, offset


def chat_logprobs(entries: Sequence[TokenLogprobs], strings: TokenStrings) -> ChatLogprobs:
    """The chat `logprobs` object: per generated token, its logprob and exactly its k most likely tokens."""
    text = _strings([e.token_id for e in entries], entries, strings)

    def top(token_id: int, value: float) -> TopLogprob:
        token = text[token_id]
        return TopLogprob(token=token, logprob=finite(value), bytes=list(token.encode("utf-8")))

    content = [
        ChatTokenLogprob(**top(e.token_id, e.logprob).model_dump(), top_logprobs=[top(i, v) for i, v in e.top])
        for e in entries
    ]
    return ChatLogprobs(content=content)
