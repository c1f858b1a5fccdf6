"""`TextCodec`: the tokenizer side of the `Engine` protocol (encode, decode, token strings, chat rendering).

One job, shared by every engine (the built-in one and vLLM), so both tokenize, template and decode alike.
Depends on nothing but a Hugging Face tokenizer object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefixtune.serve.engine.messages import ChatTurn


class TextCodec:
    """Text <-> token ids for one tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._token_strings: dict[int, str] = {}  # id -> the token decoded alone; bounded by the vocabulary

    def encode(self, text: str) -> list[int]:
        """Tokenize a prompt (adds the tokenizer's special tokens)."""
        return list(self.tokenizer(text)["input_ids"])

    def decode(self, token_ids: Sequence[int]) -> str:
        """The text of token ids, special tokens skipped."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        """Each token decoded alone, special tokens kept (an end-of-sequence token shows as itself)."""
        missing = {t for t in token_ids if t not in self._token_strings}
        for t in missing:
            self._token_strings[t] = self.tokenizer.decode([t], skip_special_tokens=False)
        return [self._token_strings[t] for t in token_ids]

    def render_chat(self, turns: Sequence[ChatTurn]) -> str:
        """The prompt text of a chat, ending with the assistant's turn opened."""
        messages = [{"role": t.role, "content": t.content} for t in turns]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


class TextCodecMethods:
    """The `Engine` protocol's text methods, delegated to the engine's `codec` (a base class of both engines)."""

    codec: TextCodec

    def encode(self, text: str) -> list[int]:
        return self.codec.encode(text)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.codec.decode(token_ids)

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        return self.codec.token_strings(token_ids)

    def render_chat(self, turns: Sequence[ChatTurn]) -> str:
        return self.codec.render_chat(turns)
