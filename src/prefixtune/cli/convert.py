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
        help="base model: smollm2-135m, an HF directory or a .gguf file (default: the one recorded in SRC's "
        "run, else smollm2-135m)",
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
    from prefixtune.io.peft_export import default_peft_type, export_peft
    from prefixtune.io.peft_import import import_peft
    from prefixtune.models import load_model

    if not Path(args.src).is_dir():  # fail before spending time on the model
        raise AdapterFormatError(f"{args.src}: no such adapter directory")
    model, tokenizer = load_model(resolve_model_name(args.model, args.src))
    if args.source_format == "peft":
        dst = import_peft(model, args.src, args.dst)
        method = pt.load_adapter(model, dst).adapter_config().method
        print(f"wrote prefixtune adapter (method {method}) to {dst}")
        return 0
    pm = pt.load_adapter(model, args.src, tokenizer=tokenizer)
    dst = export_peft(pm, args.dst, peft_type=args.peft_type)
    kind = args.peft_type or default_peft_type(pm.adapter_config().method)
    print(f"wrote PEFT {kind} adapter to {dst}")
    return 0
