"""`prefixtune train`: train an adapter on a JSONL file or a built-in dataset.

One job: flags (generated from `TrainConfig` and `PrefixConfig`, so help strings are the fields' own) and
an optional TOML config -> `run_training` -> a summary table. Precedence: defaults < --config file < flags.
"""

from __future__ import annotations

import argparse
import sys

from prefixtune.cli.common import format_table
from prefixtune.cli.options import add_dataclass_flags, collect, read_config_file
from prefixtune.config import HEAD_POOLINGS, INITS, METHODS, POSITION_CONVENTIONS, PrefixConfig
from prefixtune.train.config import PRECISIONS, SCHEDULES, TrainConfig
from prefixtune.train.formats import KINDS

EXAMPLES = """\
examples:
  # the demo task: a prefix adapter on Rotten Tomatoes with the built-in SmolLM2-135M
  prefixtune train --data rotten-tomatoes --output-dir runs/rt --num-virtual-tokens 16 --max-steps 200

  # your own classification data: {"text": ..., "label": ...} per line
  prefixtune train --data train.jsonl --eval-data valid.jsonl \\
      --template 'Review: {text}\\nSentiment:' --verbalizer 'pos= positive,neg= negative'

  # prompt/completion pairs, kv prefixes through the reparametrization MLP (note the lower LR)
  prefixtune train --data pairs.jsonl --method kv --reparam-hidden 512 --learning-rate 1e-4

  # an encoder (all-MiniLM-L6-v2, BERT): prefix + classification head, as P-tuning v2 (docs/encoders.md)
  prefixtune train --model all-minilm-l6-v2 --data rotten-tomatoes --train-head \
      --position-convention unshifted --learning-rate 1e-2 --output-dir runs/minilm

  # token classification on an encoder: {"tokens": [...], "tags": [...]} per line
  prefixtune train --model all-minilm-l6-v2 --data ner.jsonl --eval-data ner-valid.jsonl --train-head

  # everything from a config file, one flag overridden; then continue an interrupted run exactly
  prefixtune train --config configs/rotten-tomatoes.toml --max-steps 300
  prefixtune train --config configs/rotten-tomatoes.toml --max-steps 300 --resume

  # several GPUs (the same command under accelerate)
  accelerate launch -m prefixtune.cli.main train --data train.jsonl --output-dir runs/x

learning rates: direct prefixes train well at 5e-3..1e-2 (P-tuning v2 uses up to 6e-2); with the
reparametrization MLP (--reparam-hidden) use 5e-5..1e-4. The default is the method's own (prefix 3e-2,
kv 1e-2, prompt 5e-3: what the quality suite's validation picked) or 1e-4 with the MLP.

outputs (in --output-dir): adapter/ (best by validation metric; task format stored in it, so `prefixtune
eval` needs no format flags), checkpoint.pt (for --resume), metrics.jsonl, curve.png, train_config.json.
"""

ADAPTER_PREFIX = "adapter__"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train an adapter",
        description="Train a prefix / kv / prompt adapter on a frozen model; only the adapter's parameters learn.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="TOML file with TrainConfig keys and an [adapter] table of PrefixConfig keys")
    add_dataclass_flags(
        parser.add_argument_group("training"),
        TrainConfig,
        choices={"schedule": SCHEDULES, "mixed_precision": PRECISIONS, "task": KINDS},
    )
    add_dataclass_flags(
        parser.add_argument_group("adapter"),
        PrefixConfig,
        exclude=("seed",),
        dest_prefix=ADAPTER_PREFIX,
        choices={
            "method": METHODS,
            "init": INITS,
            "position_convention": POSITION_CONVENTIONS,
            "head_pooling": HEAD_POOLINGS,
        },
    )
    parser.set_defaults(func=run)


def build_configs(args: argparse.Namespace) -> tuple[TrainConfig, PrefixConfig]:
    """The run's configs from defaults, the --config file and the flags (in that order of precedence)."""
    file_values = read_config_file(args.config) if args.config else {}
    train_values = collect(args, TrainConfig, file_values)
    adapter_values = collect(args, PrefixConfig, file_values.get("adapter", {}), dest_prefix=ADAPTER_PREFIX)
    train = TrainConfig(**train_values)
    adapter = PrefixConfig(**{**adapter_values, "seed": train.seed})
    return train, adapter


def _by_part(total: int, parts: dict[str, int]) -> str:
    """ "N", or "N (prefix P, head H)" when the adapter trains its own task head."""
    if len(parts) <= 1:
        return str(total)
    return f"{total} (" + ", ".join(f"{k} {v}" for k, v in parts.items()) + ")"


def run(args: argparse.Namespace) -> int:
    """Train and print the summary table."""
    from prefixtune.cli.progress import progress_bar
    from prefixtune.train.run import run_training

    train_config, adapter_config = build_configs(args)
    with progress_bar(train_config.progress) as on_progress:
        result = run_training(train_config, adapter_config, on_progress=on_progress)
    if not result.is_main_process:
        return 0  # one summary per run, not one per process
    loop = result.loop
    rows: list[tuple[str, object]] = [
        ("adapter", str(result.adapter_dir)),
        ("method", adapter_config.method),
        ("num_virtual_tokens", adapter_config.num_virtual_tokens),
        ("trainable parameters", _by_part(result.trainable_parameters, result.trainable_parts)),
        ("share of the model", f"{100 * result.trainable_parameters / result.total_parameters:.3f}%"),
        ("training examples", result.num_train_examples),
        ("steps", loop.steps),
        ("time (s)", f"{loop.seconds:.1f}"),
        ("final training loss", loop.final_loss if loop.final_loss is not None else "-"),
    ]
    if loop.base_metrics:
        rows.append((f"base model {loop.metric}", loop.base_metrics.get(loop.metric, float("nan"))))
    if loop.best_metric is not None:
        rows.append((f"best validation {loop.metric}", loop.best_metric))
        rows.append(("best step", loop.best_step))
    rows += [("metrics", str(result.metrics_path)), ("curve", str(result.curve_path or "-"))]
    if result.skipped:
        rows.append(("skipped", result.skipped))
    print(format_table(rows, title="training summary"), file=sys.stdout)
    return 0
