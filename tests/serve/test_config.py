"""ServeConfig validation lists every problem; the adapter-keys file is checked at start."""

from __future__ import annotations

import importlib.util

import pytest

from prefixtune.errors import ConfigError
from prefixtune.serve.config import ServeConfig
from prefixtune.serve.server import create_app, read_adapter_keys
from tests.serve.conftest import served_model
from tests.train.conftest import make_tokenizer


def test_every_problem_is_listed():
    config = ServeConfig(port=0, max_num_seqs=8, max_num_batched_tokens=4, adapter_cache_mb=0, max_model_len=1, max_n=0)
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert len(info.value.problems) == 5
    assert ServeConfig().validate() == ServeConfig()


def test_adapter_keys_file(tmp_path):
    good = tmp_path / "keys.json"
    good.write_text('{"a": ["k1", "k2"]}')
    assert read_adapter_keys(str(good)) == {"a": ["k1", "k2"]}
    assert read_adapter_keys(None) == {}
    for text in ('{"a": "k1"}', "[1]", "{broken"):
        good.write_text(text)
        with pytest.raises(ConfigError):
            read_adapter_keys(str(good))
    with pytest.raises(ConfigError):
        read_adapter_keys(str(tmp_path / "missing.json"))


def test_engine_vllm_without_vllm_is_a_clear_config_error() -> None:
    """In an environment without vLLM, `--engine vllm` says how to get it instead of an ImportError."""
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here (tests/vllm cover --engine vllm)")
    with pytest.raises(ConfigError, match="make setup-vllm"):
        create_app(served_model(), make_tokenizer(), ServeConfig(model="tiny", engine="vllm"))


def test_unknown_engine_is_refused() -> None:
    with pytest.raises(ConfigError, match="engine"):
        ServeConfig(engine="tgi").validate()
