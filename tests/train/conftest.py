"""Fixtures for train/ and cli/ tests: a tiny character tokenizer, tiny random models saved as HF directories,
and small JSONL task files. Nothing is downloaded."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from tests.conftest import VOCAB, make_model

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3, matching the tiny models' bos=1, eos=2
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def make_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A character-level tokenizer over printable ASCII (fits the tiny models' 128-token vocabulary)."""
    chars = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + chars)}
    assert len(vocab) <= VOCAB
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.fixture(scope="session")
def tokenizer() -> transformers.PreTrainedTokenizerFast:
    tok = make_tokenizer()
    tok.padding_side = "left"
    return tok


def save_tiny_model(kind: str, directory: Path) -> Path:
    """A tiny random model of `kind` with the character tokenizer, saved as an HF directory."""
    model = make_model(kind)
    model.save_pretrained(directory)
    make_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return save_tiny_model("gpt2", tmp_path_factory.mktemp("tiny-gpt2"))


def write_jsonl(path: Path, rows: list) -> Path:
    """Write rows (dicts, or raw strings written as-is) one per line."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def short_run_config(model_dir: Path, files: tuple[Path, Path], out: Path, **changes):
    """A 2-step run of the toy task (no evaluation during training, batch 4, no progress bar)."""
    from prefixtune.train.config import TrainConfig

    train, valid = files
    base = dict(model=str(model_dir), data=str(train), eval_data=str(valid), output_dir=str(out), max_steps=2)
    return TrainConfig(**{**base, "eval_every": 0, "batch_size": 4, "progress": False, **changes})


def sentiment_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """A toy classification task a tiny model can learn: the label is spelled by the text's first word."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        word = "good" if label == "pos" else "bad"
        rows.append({"text": f"{word} {rng.choice('abcdefgh')}{rng.choice('xyz')}", "label": label})
    return rows


@pytest.fixture
def sentiment_files(tmp_path) -> tuple[Path, Path]:
    """(train.jsonl, valid.jsonl) of the toy classification task."""
    return (
        write_jsonl(tmp_path / "train.jsonl", sentiment_rows(64, seed=0)),
        write_jsonl(tmp_path / "valid.jsonl", sentiment_rows(16, seed=1)),
    )


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread; with several, OpenMP spin-waits dominate on shared CPUs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
