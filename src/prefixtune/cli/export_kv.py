"""`prefixtune export-kv`: an adapter's compiled per-layer keys/values as a portable KV pack.

One job: load model + adapter, compile it, write the safetensors pack specified in docs/kv-pack.md
(`io.kv_pack.write_kv_pack`) and print one line describing it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefixtune.cli.common import resolve_model_name
from prefixtune.errors import AdapterFormatError

# `io.kv_pack.DTYPES` by name, without importing torch for `--help` (a test keeps the two equal).
PACK_DTYPES = ("bfloat16", "float16", "float32")

EXAMPLES = """\
examples:
  prefixtune export-kv runs/demo/adapter demo.kvpack.safetensors
  prefixtune export-kv runs/demo/adapter demo.kvpack.safetensors --dtype bfloat16 --model ./my-hf-model

The pack holds keys.{l} / values.{l} of shape (num_key_value_heads, m, head_dim), exactly as each layer's
attention consumes them, plus dtype, layout, position convention and base-model fingerprint in its header.
See docs/kv-pack.md for how an engine uses it.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export-kv` subcommand."""
    parser = subparsers.add_parser(
        "export-kv",
        help="write an adapter's compiled keys/values as a portable KV pack",
        description="Compile an adapter on its base model and write the per-layer keys/values (a KV pack).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("adapter", help="adapter directory (prefixtune or PEFT format)")
    parser.add_argument("output", help="the .safetensors file to write")
    parser.add_argument(
        "--model",
        default=None,
        help="base model: smollm2-135m, an HF directory (no tokenizer needed) or a .gguf file (default: the one "
        "recorded in the adapter's run, else smollm2-135m; a kv adapter needs none)",
    )
    parser.add_argument("--dtype", choices=PACK_DTYPES, default="float32", help="dtype of the pack (default: float32)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Compile (from the files alone where the method allows, else on the base model), write, describe."""
    import torch

    import prefixtune as pt
    from prefixtune.io.kv_pack import write_kv_pack
    from prefixtune.io.peft_import import read_adapter_files
    from prefixtune.io.stored_kv import compile_without_model
    from prefixtune.models import load_base_model

    if not Path(args.adapter).is_dir():  # fail before spending time on the model
        raise AdapterFormatError(f"{args.adapter}: no such adapter directory")
    kv = compile_without_model(read_adapter_files(args.adapter)) if args.model is None else None
    if kv is None:
        pm = pt.load_adapter(load_base_model(resolve_model_name(args.model, args.adapter)), args.adapter)
        with torch.no_grad():
            kv = pm.compile()
    path = write_kv_pack(kv, args.output, dtype=args.dtype, adapter_name=Path(args.adapter).name)
    size = path.stat().st_size
    print(
        f"wrote KV pack {path}: {kv.num_layers} layers x {kv.num_virtual_tokens} virtual tokens, {args.dtype}, "
        f"position convention {kv.position_convention!r}, {size:,} bytes"
    )
    return 0
