"""ServeConfig validation lists every problem; the adapter-keys file is checked at start."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from prefixtune.errors import ConfigError
from prefixtune.serve.config import ServeConfig
from prefixtune.serve.engine.scheduler import SchedulerConfig
from prefixtune.serve.server import create_app, read_adapter_keys
from tests.serve.conftest import served_model
from tests.train.conftest import make_tokenizer


def test_every_problem_is_listed():
    config = ServeConfig.from_flat(
        port=0, max_num_seqs=8, max_num_batched_tokens=4, adapter_cache_mb=0, max_model_len=1, max_n=0
    )
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


# Every flag `prefixtune serve` had before ServeConfig was split into its parts (issue 11, item 4), with its
# default: the split must keep each flat name (flag, config-file key, from_flat keyword) and default.
FLAT_DEFAULTS = {
    "model": "smollm2-135m",
    "adapters": None,
    "host": "127.0.0.1",
    "port": 8000,
    "served_model_name": None,
    "api_key": (),
    "adapter_keys": None,
    "adapter_cache_mb": 512.0,
    "max_num_seqs": 16,
    "max_num_batched_tokens": 256,
    "max_waiting": 256,
    "max_model_len": None,
    "max_request_bytes": 1 << 20,
    "request_timeout_s": 600.0,
    "default_max_tokens": 256,
    "max_n": 8,
    "drain_timeout_s": 30.0,
    "engine": "prefixtune",
    "vllm_tensor_parallel_size": 1,
    "vllm_data_parallel_size": 1,
    "vllm_dtype": "auto",
    "vllm_gpu_memory_utilization": 0.9,
    "vllm_enable_prefix_caching": True,
    "vllm_block_size": None,
    "vllm_kv_cache_gb": None,
    "vllm_enforce_eager": False,
    "vllm_kv_dir": None,
    "allow_unverified_adapters": False,
    "metrics_require_key": False,
    "timeout_keep_alive_s": 5.0,
    "limit_concurrency": 1024,
}


def serve_parser():
    from prefixtune.cli.main import build_parser

    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices["serve"]


def test_the_flat_names_and_defaults_are_those_before_the_split():
    assert ServeConfig().to_flat() == FLAT_DEFAULTS
    flags = {a.dest for a in serve_parser()._actions if a.option_strings} - {"help", "config"}
    assert flags == set(FLAT_DEFAULTS)


def test_flat_names_land_in_their_parts_and_back():
    config = ServeConfig.from_flat(
        max_num_seqs=4, max_model_len=128, vllm_dtype="float32", port=9000, api_key=("k",), adapter_cache_mb=1.0
    )
    assert config.limits.scheduler.max_num_seqs == 4 and config.limits.max_model_len == 128
    assert config.vllm.dtype == "float32" and config.http.port == 9000
    assert config.api.api_keys == frozenset({"k"}) and config.registry.cache_bytes == 2**20
    assert ServeConfig.from_flat(**config.to_flat()) == config
    changed = config.replace(max_waiting=3, host="0.0.0.0")
    assert changed.limits.scheduler == SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=256, max_waiting=3)
    assert changed.http.host == "0.0.0.0" and changed.vllm == config.vllm
    with pytest.raises(TypeError, match="tensor_parallel_size"):
        ServeConfig.from_flat(tensor_parallel_size=2)  # its flat name is vllm_tensor_parallel_size


def test_a_config_file_keeps_flat_keys_and_flags_win(tmp_path):
    from prefixtune.cli.serve import build_config

    file = tmp_path / "serve.toml"
    file.write_text('[serve]\nmax_num_seqs = 4\nvllm_dtype = "float32"\nport = 9001\napi_key = "k"\n')
    args = serve_parser().parse_args(["--config", str(file), "--port", "9002", "--max-model-len", "64"])
    config = build_config(args)
    assert config == ServeConfig.from_flat(
        max_num_seqs=4, vllm_dtype="float32", port=9002, api_key=("k",), max_model_len=64
    )
    file.write_text("[serve.vllm]\ndtype = 'float32'\n")  # would be silently ignored: refused, saying how
    with pytest.raises(ConfigError, match="flat"):
        build_config(serve_parser().parse_args(["--config", str(file)]))
    file.write_text("max_num_seq = 4\n")
    with pytest.raises(ConfigError, match="max_num_seq"):
        build_config(serve_parser().parse_args(["--config", str(file)]))


def test_vllm_engine_args_come_from_the_shared_limits_and_vllm_settings():
    from prefixtune.vllm.engine_config import VllmEngineConfig

    config = ServeConfig.from_flat(
        max_num_seqs=3,
        max_num_batched_tokens=48,
        max_model_len=96,
        vllm_dtype="float32",
        vllm_block_size=32,
        adapter_cache_mb=64.0,
    )
    vllm_config = VllmEngineConfig("m", "tiny", "kv", registry=config.registry, limits=config.limits, vllm=config.vllm)
    args = vllm_config.engine_args()
    assert args.pop("kv_transfer_config")["kv_connector_extra_config"]["device_budget_mb"] == 64.0
    assert args == {
        "model": "m",
        "served_model_name": ["tiny"],
        "dtype": "float32",
        "max_num_seqs": 3,
        "max_num_batched_tokens": 48,
        "tensor_parallel_size": 1,
        "data_parallel_size": 1,
        "gpu_memory_utilization": 0.9,
        "enable_prefix_caching": True,
        "enforce_eager": False,
        "seed": 0,
        "max_model_len": 96,
        "block_size": 32,
    }


def test_serve_help_imports_no_model_framework_and_no_server():
    """ServeConfig and its parts are plain dataclasses: `prefixtune serve --help` builds every flag from them
    without torch, transformers or the HTTP stack."""
    from tests.cli.test_startup import PROBE

    heavy = '("torch", "transformers", "safetensors", "accelerate")'
    probe = PROBE.replace(heavy, '("torch", "transformers", "fastapi")')
    assert probe != PROBE
    done = subprocess.run([sys.executable, "-c", probe, "serve", "--help"], capture_output=True, text=True, timeout=120)
    assert "--vllm-tensor-parallel-size" in done.stdout and "--max-num-seqs" in done.stdout
    assert done.stderr.strip().endswith("HEAVY="), done.stderr[-300:]
