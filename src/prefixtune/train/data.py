"""Read task data: JSONL files or built-in datasets -> parsed `Example`s -> token ids with loss labels.

One job: everything between a path on disk and lists of token ids. Every problem is a `DataError` naming
the file and line, or, when the caller asked for `skip_invalid`, a counted skip reported in a `SkipReport`;
nothing is ever dropped silently. Depends on `train.formats`, `train.chat` and a tokenizer; no torch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prefixtune.errors import DataError
from prefixtune.train.formats import Example, TaskFormat, detect_kind, parse_record

T = TypeVar("T")

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value that the HF loss ignores (prompt tokens and padding)

Record = tuple[str, Any]  # (source "path:line", decoded JSON value)


@dataclass(slots=True)
class SkipReport:
    """Counts the records skipped under `skip_invalid`, keeping the first few reasons to show the user."""

    count: int = 0
    reasons: list[str] = field(default_factory=list)
    keep: int = 5

    def add(self, reason: str) -> None:
        """Record one skipped record and why."""
        self.count += 1
        if len(self.reasons) < self.keep:
            self.reasons.append(reason)
        logger.warning("skipped %s", reason)

    def summary(self) -> str:
        """One line for the user, empty when nothing was skipped."""
        if not self.count:
            return ""
        more = f" (and {self.count - len(self.reasons)} more)" if self.count > len(self.reasons) else ""
        return f"skipped {self.count} invalid record(s): " + "; ".join(self.reasons) + more


@dataclass(frozen=True, slots=True)
class Encoded:
    """Token ids of one example and its labels (IGNORE_INDEX where there is no loss)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    source: str


def read_jsonl(path: str | Path) -> Iterator[Record]:
    """Yield `(source, value)` for each non-blank line of a JSONL file.

    Raises:
        DataError: the file is missing or empty, or a line is not valid JSON (named `path:line`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file; give a JSONL file or a built-in dataset name")
    seen = 0
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            seen += 1
            source = f"{path}:{lineno}"
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{source}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            yield source, value
    if not seen:
        raise DataError(f"{path}: the file is empty; it needs one JSON object per line")


def infer_format(
    records: Sequence[Record],
    *,
    kind: str | None = None,
    template: str | None = None,
    verbalizer: Mapping[str, str] | None = None,
) -> TaskFormat:
    """Build the `TaskFormat` for some records, detecting the kind from the first record when not given.

    For classification without a verbalizer, every label seen maps to itself after a space, in sorted order.
    """
    if not records:
        raise DataError("no records to infer the task format from")
    source, first = records[0]
    if kind is None:
        if not isinstance(first, dict):
            raise DataError(f"{source}: expected a JSON object, got {type(first).__name__}")
        kind = detect_kind(first, source)
    options: dict[str, Any] = {}
    if template is not None:
        options["template"] = template
    if kind == "token_classification":  # every tag seen, sorted: the head's label ids
        options["tags"] = tuple(sorted({t for _, r in records if isinstance(r, dict) for t in _tags_of(r)}))
    if kind == "classification":
        if verbalizer:
            options["verbalizer"] = dict(verbalizer)
        else:
            labels = {str(r["label"]) for _, r in records if isinstance(r, dict) and "label" in r}
            options["verbalizer"] = {label: f" {label}" for label in sorted(labels)}
    return TaskFormat(kind=kind, **options)


def _tags_of(record: dict[str, Any]) -> list[str]:
    tags = record.get("tags")
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def resolve_task_format(
    records: Sequence[Record],
    base: TaskFormat | None,
    *,
    kind: str | None = None,
    template: str | None = None,
    verbalizer: Mapping[str, str] | None = None,
) -> TaskFormat:
    """The task format for some records: `base` (an adapter's or a built-in dataset's) with flags over it.

    With no flag given, `base` as it is; with flags (or no base), each given flag replaces the base's field
    and the rest is inferred from the records (`infer_format`). The one rule `train` and `eval` share.
    """
    if base is not None and not (kind or template or verbalizer):
        return base
    fields = base.to_dict() if base is not None else {}
    if base is not None and base.kind == "token_classification" and kind in (None, base.kind):
        return base  # its tag set is the head's label ids; nothing to infer
    return infer_format(
        records,
        kind=kind or fields.get("kind"),
        template=template or fields.get("template"),
        verbalizer=verbalizer or fields.get("verbalizer"),
    )


def parse_records(
    records: Iterable[Record], fmt: TaskFormat, tokenizer: Any, skips: SkipReport | None = None
) -> list[Example]:
    """Parse records; with `skips` given, invalid ones are counted there instead of raising."""

    def parse(record: Record) -> Example:
        source, value = record
        return parse_record(value, fmt, source, tokenizer)

    return keep_valid(records, parse, skips, "no valid records left")


def encode_example(example: Example, tokenizer: Any, max_length: int | None = None) -> Encoded:
    """Tokenize an example segment by segment; prompt tokens get IGNORE_INDEX labels.

    Segments are tokenized separately (special tokens only on the first), exactly as evaluation tokenizes
    a prompt and then each verbalizer option, so training and scoring see the same ids.

    Raises:
        DataError: the example is longer than `max_length` tokens, or its target tokenizes to nothing.
    """
    ids: list[int] = []
    labels: list[int] = []
    for i, segment in enumerate(example.segments):
        piece = tokenizer(segment.text, add_special_tokens=(i == 0))["input_ids"]
        ids.extend(piece)
        labels.extend(piece if segment.has_loss else [IGNORE_INDEX] * len(piece))
    if all(label == IGNORE_INDEX for label in labels):
        raise DataError(f"{example.source}: the target tokenizes to no tokens; there is nothing to train on")
    if max_length is not None and len(ids) > max_length:
        raise DataError(
            f"{example.source}: {len(ids)} tokens exceed --max-length {max_length}; "
            "raise --max-length or pass --skip-invalid to skip such records"
        )
    return Encoded(tuple(ids), tuple(labels), example.source)


def encode_examples(
    examples: Iterable[Example], tokenizer: Any, max_length: int | None, skips: SkipReport | None = None
) -> list[Encoded]:
    """Encode many examples; with `skips`, over-long ones are counted there instead of raising."""
    return keep_valid(examples, lambda e: encode_example(e, tokenizer, max_length), skips, "no records fit")


def keep_valid(
    items: Iterable[Any], convert: Callable[[Any], T], skips: SkipReport | None, nothing_left: str
) -> list[T]:
    """`convert` every item; a DataError raises, or with `skips` is counted there. Raises if none is left."""
    out = []
    for item in items:
        try:
            out.append(convert(item))
        except DataError as exc:
            if skips is None:
                raise
            skips.add(str(exc))
    if not out:
        raise DataError(nothing_left + (f" ({skips.summary()})" if skips and skips.count else ""))
    return out


def encode_prompt(example: Example, tokenizer: Any) -> list[int]:
    """Token ids of the example's prompt (segments before the last target), tokenized as training does."""
    last = max(i for i, s in enumerate(example.segments) if s.has_loss)
    ids: list[int] = []
    for i, segment in enumerate(example.segments[:last]):
        ids.extend(tokenizer(segment.text, add_special_tokens=(i == 0))["input_ids"])
    return ids
