"""`prefixtune inspect ADAPTER`: what an adapter directory holds, without loading any model.

One job: read the adapter files and describe them: method, m, layers, parameter count, per-layer norms,
position convention, an encoder-decoder's attention sites, base-model fingerprint, what was trained and where
it enters the model, and the task format recorded by `prefixtune train`. `--json` prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from prefixtune.cli.common import format_table

if TYPE_CHECKING:
    import torch

EXAMPLES = """\
examples:
  prefixtune inspect runs/demo/adapter
  prefixtune inspect runs/demo/adapter --json | jq .per_layer_norms
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `inspect` subcommand."""
    parser = subparsers.add_parser(
        "inspect",
        help="describe an adapter directory",
        description="Describe an adapter directory (no model is loaded).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("adapter", help="adapter directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def per_layer_norms(method: str, tensors: dict[str, torch.Tensor]) -> list[float]:
    """L2 norm of each layer's trained numbers (the method's per-layer view); one entry for a method that
    trains nothing per layer (a prompt)."""
    import torch

    from prefixtune.parametrizations import parametrization_class

    layers = parametrization_class(method).layer_views(tensors)
    if layers:
        return [float(t.norm()) for t in layers]
    return [float(torch.linalg.vector_norm(torch.cat([t.flatten() for t in tensors.values()])))]


def site_counts(slot_sites: list[str] | None) -> dict[str, int] | None:
    """Encoder-decoder adapters: site -> layers it covers (the slots' sites in adapter_config.json); None else."""
    if not slot_sites:
        return None
    counts: dict[str, int] = {}
    for site in slot_sites:
        counts[site] = counts.get(site, 0) + 1
    return counts


def describe(path: str) -> dict[str, Any]:
    """The adapter's description as a JSON-ready dict."""
    from prefixtune.io.peft_import import read_adapter_files
    from prefixtune.parametrizations import parametrization_class

    files = read_adapter_files(path)  # ours or a PEFT directory
    cfg = files.config
    raw = files.raw_config
    trained = {k: v for k, v in files.tensors.items() if not k.startswith("compiled")}
    cls = parametrization_class(cfg.method)
    parts = {"prefix": sum(t.numel() for t in trained.values())}
    if files.head is not None:
        parts["head"] = sum(t.numel() for t in files.head.values())
    return {
        "path": str(files.path),
        "method": cfg.method,
        "num_virtual_tokens": cfg.num_virtual_tokens,
        "num_layers": raw.get("num_layers"),
        "hidden_size": raw.get("hidden_size"),
        "num_parameters": sum(parts.values()),
        "parameters_by_part": parts,
        "train_head": cfg.train_head,
        "head_pooling": cfg.head_pooling if cfg.train_head else None,
        "head": {k: list(t.shape) for k, t in (files.head or {}).items()},
        "position_convention": cfg.position_convention,
        "sites": site_counts(raw.get("slot_sites")),
        "init": cfg.init,
        "reparam_hidden_during_training": cfg.reparam_hidden,
        "trains": cls.trains + _head_trains(cfg),
        "injected": cls.injected,
        "per_layer_norms": [round(n, 4) for n in per_layer_norms(cfg.method, trained)],
        "tensors": {k: list(t.shape) for k, t in files.tensors.items()},
        "base_model_fingerprint": files.fingerprint,
        "format_version": raw.get("format_version"),
        "prefixtune_version": raw.get("prefixtune_version"),
        "task": files.metadata.get("task"),
        "training": files.metadata.get("training"),
    }


def _head_trains(cfg: Any) -> str:
    """What the adapter's own head adds to what trains ("" without one)."""
    if not cfg.train_head:
        return ""
    if cfg.head_pooling == "mean":
        return "; and its own linear head on the mean of the real tokens' last hidden states"
    return "; and its own copy of the model's task head"


def _parameters(info: dict[str, Any]) -> str:
    """ "N" or "N (prefix P, head H)" for an adapter that trains its own task head."""
    parts = info["parameters_by_part"]
    if len(parts) == 1:
        return str(info["num_parameters"])
    return f"{info['num_parameters']} (" + ", ".join(f"{k} {v}" for k, v in parts.items()) + ")"


def _text(info: dict[str, Any]) -> str:
    norms = info["per_layer_norms"]
    shown = ", ".join(f"{n:.3g}" for n in norms[:8]) + (", ..." if len(norms) > 8 else "")
    fingerprint = info["base_model_fingerprint"] or {}
    task = info["task"] or {}
    rows: list[tuple[str, Any]] = [
        ("method", info["method"]),
        ("num_virtual_tokens (m)", info["num_virtual_tokens"]),
        ("layers", info["num_layers"]),
        ("hidden size", info["hidden_size"]),
        ("parameters", _parameters(info)),
        ("trains", info["trains"]),
        ("injected", info["injected"]),
        ("position convention", info["position_convention"]),
        *([("sites", ", ".join(f"{k} ({n} layers)" for k, n in info["sites"].items()))] if info["sites"] else []),
        ("init", info["init"]),
        ("per-layer norms", f"[{shown}] (min {min(norms):.3g}, max {max(norms):.3g})"),
        ("base model", ", ".join(f"{k}={v}" for k, v in fingerprint.items()) or "unknown"),
        ("task", _task(task)),
        ("format", f"v{info['format_version']} (prefixtune {info['prefixtune_version']})"),
    ]
    return format_table(rows, title=info["path"])


def _task(task: dict[str, Any]) -> str:
    if not task:
        return "not recorded"
    if task.get("kind") == "token_classification":
        return f"token_classification, tags {task.get('tags')}"
    return f"{task.get('kind')} {task.get('verbalizer') or ''}".strip()


def run(args: argparse.Namespace) -> int:
    """Print the description."""
    info = describe(args.adapter)
    print(json.dumps(info, indent=2) if args.json else _text(info))
    return 0
