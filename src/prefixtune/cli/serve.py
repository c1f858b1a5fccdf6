"""`prefixtune serve`: the multi-tenant OpenAI-compatible server (issue 4).

One job: parse flags (and an optional TOML file) into a `ServeConfig` and call `prefixtune.serve.server.serve`.
"""

from __future__ import annotations

import argparse
import dataclasses

from prefixtune.cli.options import add_dataclass_flags, collect, read_config_file
from prefixtune.errors import ConfigError
from prefixtune.serve.api.settings import ApiSettings
from prefixtune.serve.config import ENGINES, ServeConfig

EXAMPLES = """\
examples:
  prefixtune serve --model smollm2-135m --adapters adapters/ --host 127.0.0.1 --port 8000
  prefixtune serve                                   # the built-in model, no adapters
  prefixtune serve --adapters adapters/ --api-key ADMIN --adapter-keys tenants.json --adapter-cache-mb 256
  prefixtune serve --engine vllm --adapters adapters/ --vllm-tensor-parallel-size 2   # docs/vllm.md

Every subdirectory of --adapters is an adapter, served under its directory name as the OpenAI `model`;
the base model's own name selects no adapter. Then, for example:
  curl localhost:8000/v1/completions -H 'content-type: application/json' \\
       -d '{"model": "my-adapter", "prompt": "Review: great film\\nSentiment:", "max_tokens": 2}'
  curl localhost:8000/v1/adapters -d '{"name": "new", "path": "new"}' -H 'content-type: application/json'
Endpoints: /v1/completions, /v1/chat/completions (stream: true for SSE), /v1/models, POST /v1/adapters,
DELETE /v1/adapters/NAME, /health, /metrics (Prometheus). Ctrl-C drains running requests, then stops.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a base model and many adapters over an OpenAI-compatible HTTP API",
        description="Serve one frozen base model and many prefix adapters, mixed in every batch.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="TOML file with ServeConfig keys (top level or under [serve])")
    add_dataclass_flags(parser, ServeConfig, exclude=("api_key",), choices={"engine": ENGINES})
    parser.add_argument(
        "--api-key",
        action="append",
        default=argparse.SUPPRESS,
        help=ApiSettings.__dataclass_fields__["api_key"].metadata["help"] + " Repeat for several keys.",
    )
    parser.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> ServeConfig:
    """defaults < config file < flags. File keys are flat, as the flags (`max_num_seqs = 8`, `vllm_dtype = ...`)."""
    file_values = read_config_file(args.config) if getattr(args, "config", None) else {}
    file_values = file_values.get("serve", file_values)
    parts = {f.name for f in dataclasses.fields(ServeConfig) if "section" in f.metadata} | {"scheduler"}
    tables = sorted(k for k, v in file_values.items() if isinstance(v, dict) and k in parts)
    if tables:  # e.g. [serve.vllm]: the parts' fields are flat keys, as the flags; the table would be ignored
        raise ConfigError(
            f"{args.config}: tables {tables} are not read; write ServeConfig keys flat, at the top level or "
            'under [serve] (e.g. max_num_seqs = 8, vllm_dtype = "float32")'
        )
    values = collect(args, ServeConfig, file_values)
    if "api_key" in values:
        keys = values["api_key"]
        values["api_key"] = (keys,) if isinstance(keys, str) else tuple(keys)
    return ServeConfig.from_flat(**values).validate()


def run(args: argparse.Namespace) -> int:
    """Run the server until interrupted."""
    from prefixtune.serve.server import serve

    serve(build_config(args))
    return 0
