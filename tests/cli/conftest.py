"""CLI tests reuse the train fixtures: tiny models saved as HF directories and toy JSONL files."""

from tests.train.conftest import (  # noqa: F401 - pytest fixtures, registered by import
    _one_thread,
    sentiment_files,
    tiny_gpt2_dir,
    tiny_llama_dir,
    tokenizer,
)
