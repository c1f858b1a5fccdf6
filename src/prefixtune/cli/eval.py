"""`prefixtune eval`: metrics of an adapter (or of the bare model) on a task's data.

One job: load model + adapter, read the data with the task format stored in the adapter (flags only needed
for the bare model on a file), evaluate, print a table or one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys

from prefixtune.cli.common import add_model_flags, format_table, load_for_inference, stored_task_format
from prefixtune.cli.options import parse_mapping
from prefixtune.train.data import SkipReport, parse_records, resolve_task_format
from prefixtune.train.datasets import BUILTIN_DATASETS, SPLITS, builtin_format, load_records
from prefixtune.train.formats import KINDS, TaskFormat

EXAMPLES = """\
examples:
  prefixtune eval --adapter runs/demo/adapter --data rotten-tomatoes            # test split
  prefixtune eval --adapter none --data rotten-tomatoes --split validation       # the bare model, same format
  prefixtune eval --adapter runs/x/adapter --data test.jsonl --json
  prefixtune eval --adapter none --model ./my-hf-model --data test.jsonl --verbalizer 'pos= good,neg= bad'

The adapter stores its task format (template, verbalizer, labels), so no format flags are needed with one.
Classification reports accuracy and macro-F1 (each verbalizer option is scored by log-likelihood); completion
and chat tasks generate greedily and report exact match, BLEU (0-100) and ROUGE-L (0-1).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` subcommand."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate an adapter or the bare model",
        description="Evaluate an adapter (or the bare model) on JSONL data or a built-in dataset split.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_flags(parser)
    parser.add_argument("--data", required=True, help=f"JSONL file or built-in dataset ({', '.join(BUILTIN_DATASETS)})")
    parser.add_argument("--split", default="test", choices=SPLITS, help="split of a built-in dataset (default: test)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N records")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per forward pass (default: 16)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="generation budget (generation tasks)")
    parser.add_argument("--skip-invalid", action="store_true", help="skip and count invalid records")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    group = parser.add_argument_group("task format (only when the adapter does not record one)")
    group.add_argument("--task", choices=KINDS, help="classification, completion or chat (default: detected)")
    group.add_argument("--template", help="classification prompt with {text}")
    group.add_argument("--verbalizer", type=parse_mapping, help="label=word pairs or a JSON object")
    parser.set_defaults(func=run)


def _task_format(args: argparse.Namespace, stored: TaskFormat | None, records: list) -> TaskFormat:
    base = stored or builtin_format(args.data)
    return resolve_task_format(records, base, kind=args.task, template=args.template, verbalizer=args.verbalizer)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the metrics."""
    from prefixtune.train.evaluate import evaluate

    pm, tokenizer, adapter_name = load_for_inference(args.model, args.adapter)
    records = load_records(args.data, args.split, args.limit)
    fmt = _task_format(args, stored_task_format(pm, adapter_name), records)
    skips = SkipReport() if args.skip_invalid else None
    examples = parse_records(records, fmt, tokenizer, skips)
    result = evaluate(
        pm,
        tokenizer,
        examples,
        fmt,
        adapter_name=adapter_name,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )
    metrics = {k: (int(v) if k == "n" else v) for k, v in result.metrics.items()}
    if skips is not None and skips.count:
        metrics["skipped"] = skips.count
        print(skips.summary(), file=sys.stderr)
    if args.json:
        print(json.dumps({**metrics, **({"settings": result.settings} if result.settings else {})}))
    else:
        title = f"{args.adapter if adapter_name else 'bare model'} on {args.data}"
        print(format_table([*metrics.items(), *result.settings.items()], title=title))
    return 0
