"""Task formats: how one JSONL record becomes text segments, some of which carry the loss.

One job: the record shapes users bring (`{"prompt", "completion"}`, `{"text", "label"}`, `{"messages"}`, and
for encoders `{"tokens", "tags"}`) and the `TaskFormat` that describes them. The task format is stored in the
adapter's metadata, so evaluation and generation rebuild prompts exactly as training did without any flags.
Depends on `prefixtune.errors` and, for chat only, on a tokenizer's chat template; no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prefixtune.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("classification", "completion", "chat", "token_classification")
DEFAULT_TEMPLATE = "{text}\nLabel:"


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of an example's text; `has_loss` marks the tokens the model is trained to produce."""

    text: str
    has_loss: bool


@dataclass(frozen=True, slots=True)
class Example:
    """One parsed record.

    Attributes:
        segments: the text in order; training puts the loss on segments with `has_loss`.
        source: `path:line` (or `name[index]` for built-in data), used in every error message.
        label: the class label (classification only).
        reference: the expected output, for generation metrics (completion and chat).
        references: every acceptable output when the record lists them (`"references": [...]`, as E2E,
            WebNLG and CommonGen do); multi-reference BLEU and ROUGE score against these. Empty: `reference`.
        text: the record's own text (classification), which an encoder's head reads without a template.
        tokens, tags: the words and one tag per word (token classification, encoders).
    """

    segments: tuple[Segment, ...]
    source: str
    label: str | None = None
    reference: str | None = None
    references: tuple[str, ...] = ()
    text: str | None = None
    tokens: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    @property
    def prompt(self) -> str:
        """Everything before the last loss-carrying segment: what a model is given at evaluation time."""
        last = max(i for i, s in enumerate(self.segments) if s.has_loss)
        return "".join(s.text for s in self.segments[:last])


@dataclass(frozen=True, slots=True)
class TaskFormat:
    """How records of one task are turned into text.

    Attributes:
        kind: `classification`, `completion` or `chat`.
        template: classification prompt, with `{text}` where the record's text goes.
        verbalizer: classification label -> the word(s) the model must produce (default: a space then the
            label, so it tokenizes as a word after the template's colon).
        append_eos: end the target with the tokenizer's EOS token so generation learns to stop
            (completion only; chat templates close assistant turns themselves).
        tags: the tag set, in id order (token classification).
    """

    kind: str
    template: str = DEFAULT_TEMPLATE
    verbalizer: Mapping[str, str] = field(default_factory=dict)
    append_eos: bool = True
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"task kind {self.kind!r} is unknown; choose one of {', '.join(KINDS)}")
        if self.kind == "classification" and "{text}" not in self.template:
            problems.append(f"template {self.template!r} has no {{text}} placeholder")
        if any(not isinstance(w, str) or not w for w in self.verbalizer.values()):
            problems.append(f"verbalizer {dict(self.verbalizer)!r}: every label needs a non-empty word")
        if problems:
            raise ConfigError(problems, source="TaskFormat")
        if self.kind == "classification" and self.template[-1:].isspace():
            # The prompt and the label are tokenized apart (train.data.encode_example), so a trailing space
            # becomes its own token before a space-less word piece: not how the model saw such text (issue 14).
            logger.warning(
                "template %r ends with whitespace; end it without and start each verbalizer word with a space "
                "(the default) so that labels tokenize as the words the model knows",
                self.template,
            )

    @property
    def labels(self) -> tuple[str, ...]:
        """The label set, in id order: the verbalizer's labels (classification) or the tags."""
        return tuple(self.tags) if self.kind == "token_classification" else tuple(self.verbalizer)

    def render_prompt(self, text: str) -> str:
        """The classification prompt for one input text."""
        return self.template.replace("{text}", text)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in adapter metadata under `task`."""
        return {
            "kind": self.kind,
            "template": self.template,
            "verbalizer": dict(self.verbalizer),
            "labels": list(self.labels),
            "append_eos": self.append_eos,
            "tags": list(self.tags),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskFormat:
        """Inverse of `to_dict` (unknown keys are ignored, so newer adapters still load)."""
        return cls(
            kind=data["kind"],
            template=data.get("template", DEFAULT_TEMPLATE),
            verbalizer=dict(data.get("verbalizer") or {}),
            append_eos=bool(data.get("append_eos", True)),
            tags=tuple(data.get("tags") or ()),
        )


def detect_kind(record: Mapping[str, Any], source: str) -> str:
    """Which format a record is in, from its keys."""
    if "messages" in record:
        return "chat"
    if "tokens" in record or "tags" in record:
        return "token_classification"
    if "prompt" in record or "completion" in record:
        return "completion"
    if "text" in record or "label" in record:
        return "classification"
    raise DataError(
        f"{source}: cannot tell the format from keys {sorted(record)}; expected "
        '{"prompt", "completion"}, {"text", "label"}, {"messages": [...]} or {"tokens": [...], "tags": [...]}'
    )


def _require_str(record: Mapping[str, Any], key: str, source: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        seen = "missing" if key not in record else f"a {type(value).__name__}"
        raise DataError(f"{source}: field {key!r} must be a string, got {seen}")
    return value


def _optional_references(record: Mapping[str, Any], source: str) -> tuple[str, ...]:
    value = record.get("references")
    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(r, str) for r in value):
        raise DataError(f"{source}: field 'references' must be a non-empty list of strings, got {value!r:.80}")
    return tuple(value)


def _parse_classification(record: Mapping[str, Any], fmt: TaskFormat, source: str, _tok: Any) -> Example:
    text = _require_str(record, "text", source)
    if "label" not in record or isinstance(record["label"], (dict, list)) or record["label"] is None:
        raise DataError(f"{source}: field 'label' must be a string or number, got {record.get('label')!r}")
    label = str(record["label"])
    if label not in fmt.verbalizer:
        raise DataError(
            f"{source}: label {label!r} is not in the verbalizer {sorted(fmt.verbalizer)}; "
            "add it with --verbalizer or fix the record"
        )
    prompt = fmt.render_prompt(text)
    segments = (Segment(prompt, False), Segment(fmt.verbalizer[label], True))
    return Example(segments=segments, source=source, label=label, text=text)


def _parse_completion(record: Mapping[str, Any], fmt: TaskFormat, source: str, tok: Any) -> Example:
    prompt = _require_str(record, "prompt", source)
    completion = _require_str(record, "completion", source)
    if not completion:
        raise DataError(f"{source}: field 'completion' is empty; there is nothing to train on")
    eos = (tok.eos_token or "") if (fmt.append_eos and tok is not None) else ""
    segments = (Segment(prompt, False), Segment(completion + eos, True))
    references = _optional_references(record, source)
    return Example(segments=segments, source=source, reference=completion, references=references)


def _parse_chat(record: Mapping[str, Any], fmt: TaskFormat, source: str, tok: Any) -> Example:
    from prefixtune.train.chat import chat_segments  # only chat needs the template machinery

    segments, reference = chat_segments(record.get("messages"), tok, source)
    return Example(segments=segments, source=source, reference=reference)


def _string_list(record: Mapping[str, Any], key: str, source: str) -> tuple[str, ...]:
    value = record.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise DataError(f"{source}: field {key!r} must be a non-empty list of strings, got {value!r:.80}")
    return tuple(value)


def _parse_tokens(record: Mapping[str, Any], fmt: TaskFormat, source: str, _tok: Any) -> Example:
    tokens, tags = _string_list(record, "tokens", source), _string_list(record, "tags", source)
    if len(tags) != len(tokens):
        raise DataError(
            f"{source}: {len(tags)} tags for {len(tokens)} tokens; give exactly one tag per token "
            f"(tokens {list(tokens)[:6]!r}, tags {list(tags)[:6]!r})"
        )
    unknown = sorted(set(tags) - set(fmt.tags))
    if unknown:
        raise DataError(f"{source}: tags {unknown} are not in the tag set {list(fmt.tags)}; fix the record")
    return Example(segments=(Segment(" ".join(tokens), True),), source=source, tokens=tokens, tags=tags)


Parser = Callable[[Mapping[str, Any], TaskFormat, str, Any], Example]
PARSERS: dict[str, Parser] = {
    "classification": _parse_classification,
    "completion": _parse_completion,
    "chat": _parse_chat,
    "token_classification": _parse_tokens,
}


def parse_record(record: Any, fmt: TaskFormat, source: str, tokenizer: Any = None) -> Example:
    """Turn one decoded JSON value into an `Example`.

    Args:
        record: the decoded JSON value (must be an object).
        fmt: the task format; its `kind` picks the parser.
        source: `path:line`, used in error messages.
        tokenizer: needed for chat (its chat template) and for the EOS token of completions.

    Raises:
        DataError: naming `source`, when a field is missing, of the wrong type, or a label is unknown.
    """
    if not isinstance(record, dict):
        raise DataError(f"{source}: expected a JSON object, got {type(record).__name__}")
    kind = detect_kind(record, source)
    if kind != fmt.kind:
        raise DataError(f"{source}: record is in {kind} format but the task is {fmt.kind}")
    return PARSERS[fmt.kind](record, fmt, source, tokenizer)
