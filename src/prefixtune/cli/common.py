"""Pieces several subcommands share: the --model/--adapter flags, loading them, and plain-text tables.

One job: the glue between parsed flags and the library (`load_model`, `load_adapter`) that `eval`,
`generate` and `demo` would otherwise each repeat. Prints nothing itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefixtune.errors import AdapterFormatError
from prefixtune.train.formats import TaskFormat

ADAPTER_NAME = "default"


def add_model_flags(parser: argparse.ArgumentParser, *, adapter_required: bool = True) -> None:
    """`--model` and `--adapter` (a directory, or `none` for the bare model)."""
    parser.add_argument(
        "--model",
        default=None,
        help="base model: smollm2-135m (built in), an HF directory or a .gguf file "
        "(default: the one recorded in the adapter's run, else smollm2-135m)",
    )
    parser.add_argument(
        "--adapter",
        required=adapter_required,
        default="none",
        help="adapter directory (as written by `prefixtune train`), or `none` for the bare model"
        + ("" if adapter_required else " (default: none)"),
    )


def resolve_model_name(model: str | None, adapter: str | None) -> str:
    """The model to load: the flag, else the run's train_config.json next to the adapter, else the default."""
    if model:
        return model
    if adapter and adapter != "none":
        run_config = Path(adapter).parent / "train_config.json"
        if run_config.is_file():
            import json

            return json.loads(run_config.read_text()).get("model", "smollm2-135m")
    return "smollm2-135m"


def load_for_inference(model_flag: str | None, adapter: str | None) -> tuple[Any, Any, str | None]:
    """Load the base model and the adapter (if any) as a `PrefixModel`.

    Returns:
        `(prefix_model, tokenizer, adapter_name)`; `adapter_name` is None for `--adapter none`.
    """
    import prefixtune as pt
    from prefixtune.encoder_models import encoder_directory, load_encoder_for_adapter
    from prefixtune.models import load_model

    bare = adapter is None or adapter == "none"
    if not bare and not Path(adapter).is_dir():  # fail before spending time on the model
        raise AdapterFormatError(f"adapter {adapter!r} is not a directory; pass a trained adapter or `none`")
    name = resolve_model_name(model_flag, adapter)
    if not bare and encoder_directory(name) is not None:
        # An encoder adapter was trained with a task head of its labels: load the encoder with that head.
        model, tokenizer = load_encoder_for_adapter(name, adapter)
    else:
        model, tokenizer = load_model(name)
    if bare:
        return pt.PrefixModel(model, tokenizer=tokenizer), tokenizer, None
    pm = pt.load_adapter(model, adapter, adapter_name=ADAPTER_NAME, tokenizer=tokenizer)
    return pm, tokenizer, ADAPTER_NAME


def stored_task_format(pm: Any, adapter_name: str | None) -> TaskFormat | None:
    """The task format recorded in the adapter's metadata by `prefixtune train`, if any."""
    if adapter_name is None:
        return None
    task = pm.adapter_metadata(adapter_name).get("task")
    return TaskFormat.from_dict(task) if task else None


def format_table(rows: Sequence[tuple[str, Any]], title: str | None = None) -> str:
    """A two-column plain-text table."""
    width = max((len(str(k)) for k, _ in rows), default=0)
    lines = [title, "-" * len(title)] if title else []
    lines += [f"{k!s:<{width}}  {_fmt(v)}" for k, v in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
