"""Docs tests reuse the train fixtures: tiny models saved as HF directories."""

from tests.train.conftest import _one_thread, tiny_llama_dir  # noqa: F401 - pytest fixtures, registered by import
