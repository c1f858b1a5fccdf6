"""Chat records: render `{"messages": [...]}` with the tokenizer's chat template, loss on assistant turns.

One job: split a rendered conversation into segments so that exactly the assistant turns (their content and
the template's end-of-turn marker) carry the loss. Works for any template that renders a conversation as
a prefix of its continuation, which every common template does; others get a clear error. No torch.
"""

from __future__ import annotations

from typing import Any

from prefixtune.errors import DataError
from prefixtune.train.formats import Segment

ROLES = ("system", "user", "assistant", "tool")


def _check_messages(messages: Any, source: str) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{source}: field 'messages' must be a non-empty list of {{role, content}} objects")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
            raise DataError(f"{source}: messages[{i}] must be an object with a string 'content'")
        if msg.get("role") not in ROLES:
            raise DataError(f"{source}: messages[{i}] has role {msg.get('role')!r}; expected one of {ROLES}")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{source}: no assistant message; there is nothing to train on")
    if messages[0]["role"] == "assistant":
        raise DataError(f"{source}: the conversation starts with an assistant message; it needs a prompt")
    return messages


def _render(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool = False) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _tail(full: str, head: str, source: str) -> str:
    if not full.startswith(head):
        raise DataError(
            f"{source}: the tokenizer's chat template does not render a conversation as a prefix of its "
            "continuation, so assistant turns cannot be located; use prompt/completion records instead"
        )
    return full[len(head) :]


def chat_segments(messages: Any, tokenizer: Any, source: str) -> tuple[tuple[Segment, ...], str]:
    """Segments of a conversation and the last assistant turn's content (the generation reference).

    Raises:
        DataError: naming `source`, for malformed messages, a conversation without an assistant turn, or a
            tokenizer without a usable chat template.
    """
    msgs = _check_messages(messages, source)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{source}: chat records need a tokenizer with a chat template; this one has none")
    segments: list[Segment] = []
    rendered = ""
    for k, msg in enumerate(msgs):
        current = _render(tokenizer, msgs[: k + 1])
        if msg["role"] == "assistant":
            opened = _render(tokenizer, msgs[:k], add_generation_prompt=True)
            segments.append(Segment(_tail(opened, rendered, source), False))
            segments.append(Segment(_tail(current, opened, source), True))
        else:
            segments.append(Segment(_tail(current, rendered, source), False))
        rendered = current
    # Trailing non-loss turns after the last assistant message teach nothing and are dropped from the end.
    while not segments[-1].has_loss:
        segments.pop()
    reference = next(m["content"] for m in reversed(msgs) if m["role"] == "assistant")
    return tuple(s for s in segments if s.text), reference
