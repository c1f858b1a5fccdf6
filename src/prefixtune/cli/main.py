"""`prefixtune`: the command line entry point.

One job: build the parser from the subcommand modules, set up logging, run the chosen subcommand and turn
errors into exit codes: 0 success, 2 usage error (bad flags or configuration), 1 runtime error, each with a
one-line message and a hint on stderr (the traceback only with `--debug`). A subcommand module exposes
`register(subparsers)`, which adds its parser and sets `func=run`; adding a subcommand is one line in
`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from prefixtune.errors import (
    AdapterFormatError,
    AdapterNotFoundError,
    ConfigError,
    DataError,
    IncompatibleBaseModelError,
    PrefixtuneError,
    UnsupportedModelError,
)

SUBCOMMANDS: list[str] = [
    "prefixtune.cli.train",
    "prefixtune.cli.eval",
    "prefixtune.cli.generate",
    "prefixtune.cli.inspect",
    "prefixtune.cli.demo",
    "prefixtune.cli.serve",
    "prefixtune.cli.convert",
    "prefixtune.cli.export_kv",
    "prefixtune.cli.doctor",
]

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2

HINTS: dict[type[BaseException], str] = {
    ConfigError: "see `prefixtune <command> --help` for the accepted values",
    DataError: "check the data file and line named above; --skip-invalid skips (and counts) invalid records",
    AdapterFormatError: "check the adapter directory (`prefixtune inspect PATH`) or train a new one",
    AdapterNotFoundError: "check the adapter path or name",
    IncompatibleBaseModelError: "pass the --model the adapter was trained on",
    UnsupportedModelError: "use a causal LM with sdpa or eager attention (GPT-2, Llama, Qwen, ...)",
    FileNotFoundError: "check the path",
}

logger = logging.getLogger("prefixtune.cli")

EXAMPLES = """\
examples:
  prefixtune demo                                                     # train and evaluate on Rotten Tomatoes
  prefixtune train --data rotten-tomatoes --output-dir runs/rt --max-steps 200
  prefixtune eval --adapter runs/rt/adapter --data rotten-tomatoes
  prefixtune generate --adapter runs/rt/adapter "a gorgeous, moving film."
  prefixtune serve --model smollm2-135m --adapters runs/adapters --port 8000

Run `prefixtune <command> --help` for a command's flags and examples. Quick start: `make demo`.
"""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="prefixtune",
        description="Prefix fine-tuning of frozen Hugging Face language models: train, evaluate, generate.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and DEBUG logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMANDS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not debug:  # transformers' own INFO chatter is noise on the command line
        for name in ("transformers", "accelerate", "matplotlib", "httpx", "urllib3"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _hint(exc: BaseException) -> str:
    for cls in type(exc).__mro__:
        if cls in HINTS:
            return HINTS[cls]
    return "run with --debug for the full traceback"


def _fail(exc: BaseException, code: int, debug: bool, message: str | None = None) -> int:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    message = message or str(exc) or type(exc).__name__
    print(f"prefixtune: error: {message}", file=sys.stderr)
    print(f"hint: {_hint(exc)}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits with 2 on usage errors
    _setup_logging(args.debug, args.quiet)
    try:
        return int(args.func(args) or EXIT_OK)
    except ConfigError as exc:
        return _fail(exc, EXIT_USAGE, args.debug)
    except (PrefixtuneError, OSError) as exc:
        return _fail(exc, EXIT_RUNTIME, args.debug)
    except KeyboardInterrupt:
        print("prefixtune: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line unless --debug
        return _fail(exc, EXIT_RUNTIME, args.debug, message=f"unexpected {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
