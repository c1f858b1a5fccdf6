"""`prefixtune convert`: Hugging Face PEFT adapters to prefixtune's format and back.

One job: parse the flags, load the base model, call `io.peft_import.import_peft` or `io.peft_export.export_peft`
and print one line saying what was written. Both directions are exact (same logits as PEFT's own forward) or
refused with the reason.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefixtune.cli.common import resolve_model_name
from prefixtune.errors import AdapterFormatError
from prefixtune.parametrizations.peft_types import PREFIX_TUNING, PROMPT_TUNING

EXAMPLES = """\
examples:
  prefixtune convert --from peft ./peft-prefix-adapter ./adapter --model ./my-hf-model
  prefixtune convert --to peft runs/demo/adapter ./peft-adapter               # model from the run
  prefixtune convert --to peft runs/kv/adapter ./peft-adapter                 # a kv adapter: no model loaded
  prefixtune convert --to peft runs/demo/adapter ./peft-adapter --peft-type PREFIX_TUNING

PEFT PREFIX_TUNING becomes method "kv" and PROMPT_TUNING method "prompt" (`prefixtune.load_adapter` also reads
a PEFT directory directly). Every method exports to PREFIX_TUNING; "prompt" exports to PROMPT_TUNING by
default. Pickle files (adapter_model.bin) are never loaded.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `convert` subcommand."""
    parser = subparsers.add_parser(
        "convert",
        help="convert adapters between Hugging Face PEFT and prefixtune",
        description="Convert a PEFT PREFIX_TUNING/PROMPT_TUNING adapter to prefixtune's format, or back.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from", dest="source_format", choices=["peft"], help="SRC is in this format")
    direction.add_argument("--to", dest="target_format", choices=["peft"], help="write DST in this format")
    parser.add_argument("src", help="adapter directory to read")
    parser.add_argument("dst", help="adapter directory to write (replaced atomically)")
    parser.add_argument(
        "--model",
        default=None,
        help="base model: smollm2-135m, an HF directory (no tokenizer needed) or a .gguf file (default: the one "
        "recorded in SRC's run, else smollm2-135m; a kv adapter exported --to peft needs none)",
    )
    parser.add_argument(
        "--peft-type",
        choices=[PREFIX_TUNING, PROMPT_TUNING],
        default=None,
        help="with --to peft: PEFT method to write (default: PROMPT_TUNING for prompt adapters, else PREFIX_TUNING)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert, then print what was written."""
    import prefixtune as pt
    from prefixtune.io.peft_import import import_peft
    from prefixtune.models import load_base_model

    if not Path(args.src).is_dir():  # fail before spending time on the model
        raise AdapterFormatError(f"{args.src}: no such adapter directory")
    if args.source_format == "peft":
        model = load_base_model(resolve_model_name(args.model, args.src))
        dst = import_peft(model, args.src, args.dst)
        method = pt.load_adapter(model, dst).adapter_config().method
        print(f"wrote prefixtune adapter (method {method}) to {dst}")
        return 0
    return _to_peft(args)


def _to_peft(args: argparse.Namespace) -> int:
    """Without --model, a `kv` (or pre-compiled) adapter is exported from its files alone: no base model."""
    import prefixtune as pt
    from prefixtune.io.peft_export import default_peft_type, export_peft, export_prefix_kv
    from prefixtune.io.peft_import import read_adapter_files
    from prefixtune.io.stored_kv import compile_without_model
    from prefixtune.models import load_base_model

    files = read_adapter_files(args.src)
    kind = args.peft_type or default_peft_type(files.config.method)
    kv = compile_without_model(files) if args.model is None and kind == PREFIX_TUNING else None
    if kv is not None:
        dst = export_prefix_kv(kv, args.dst)
        print(f"wrote PEFT {kind} adapter to {dst} (from the adapter's files; no base model needed)")
        return 0
    pm = pt.load_adapter(load_base_model(resolve_model_name(args.model, args.src)), args.src)
    dst = export_peft(pm, args.dst, peft_type=args.peft_type)
    print(f"wrote PEFT {kind} adapter to {dst}")
    return 0
