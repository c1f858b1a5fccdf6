"""`prefixtune doctor MODEL ADAPTER`: check an adapter against a base model, in plain words.

One job: load the model, run `diagnostics.run_doctor`, print the findings (or `--json`), and exit 0 when the
adapter is healthy, 1 when something was found.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefixtune.diagnostics.findings import CODES, DoctorReport
from prefixtune.errors import AdapterFormatError

EXAMPLES = "examples:\n" + (
    "  prefixtune doctor smollm2-135m runs/demo/adapter\n"
    "  prefixtune doctor ./my-hf-model ./peft-prefix-adapter --json | jq .findings\n\n"
    "exit status: 0 healthy, 1 problems found (or the files could not be read), 2 usage error.\n\n"
    "what it looks for:\n" + "\n".join(f"  {code:22} {gloss}" for code, gloss in CODES.items())
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `doctor` subcommand."""
    parser = subparsers.add_parser(
        "doctor",
        help="check an adapter against a base model",
        description="Check an adapter (prefixtune or PEFT format) against a base model and explain what is wrong.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="base model: smollm2-135m, an HF directory or a .gguf file")
    parser.add_argument("adapter", help="adapter directory (prefixtune or PEFT format)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.set_defaults(func=run)


def format_report(report: DoctorReport) -> str:
    """The report as plain text: one line when healthy, else one entry per finding with what to do."""
    facts = report.facts
    what = f"{facts['format']} adapter, method {facts['method']}, m={facts['num_virtual_tokens']}"
    if report.is_healthy:
        return f"{report.adapter}: healthy ({what}, {facts['model_layers']} model layers)"
    count = len(report.findings)
    lines = [f"{report.adapter}: {count} problem{'s' if count > 1 else ''} ({what})"]
    for finding in report.findings:
        lines += [f"  - [{finding.code}] {finding.message}", f"    what to do: {finding.hint}"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Diagnose; exit 0 when healthy, 1 with findings."""
    from prefixtune.diagnostics import run_doctor
    from prefixtune.models import load_base_model

    if not Path(args.adapter).is_dir():  # fail before spending time on the model
        raise AdapterFormatError(f"{args.adapter}: no such adapter directory")
    model = load_base_model(args.model)  # doctor needs no tokenizer
    report = run_doctor(model, args.adapter)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0 if report.is_healthy else 1
