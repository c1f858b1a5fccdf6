"""Encoder quality benchmark (issue 12): prefix + head vs a linear probe vs head-only vs full fine-tuning.

    OMP_NUM_THREADS=1 PYTHONPATH=src:bench .venv/bin/python bench/encoder_quality.py

all-MiniLM-L6-v2 (`load_encoder("all-minilm-l6-v2", head="sequence")`, BERT, 6 layers, d=384) on the built-in
Rotten Tomatoes split. Every contender gets the same steps, batch size, seeded batches (a pure function of
seed and step, the rule of `train.loop.batch_rows`), optimizer (AdamW, torch defaults, weight decay 0.01),
schedule (linear decay, 6% warmup) and gradient clipping (1.0); only the learning rate is per method, picked
on validation accuracy from a small sweep at the first seed, then rerun at the other seeds. Contenders:

- prefix + head: `pt.attach(..., PrefixConfig(method="prefix", train_head=True))` on
  BertForSequenceClassification; the base (pooler included) frozen, the prefix and the adapter's copy of the
  classifier train (P-tuning v2). `kv` + head the same with `method="kv"`.
- linear probe: a fresh `nn.Linear(384, 2)` on the frozen encoder's mean-pooled last hidden states (the
  pooling sentence-transformers uses for this model; no normalization), encoder in eval mode.
- head-only: BertForSequenceClassification's own head (dropout 0.1 + classifier on the pooler output) trained,
  the base (pooler included) frozen in eval mode, no prefix.
- full fine-tuning: every weight of BertForSequenceClassification trains.
- levers, at prefix + head's learning rate (not swept): `kv` + head; our prefix read by the probe's head (a
  fresh linear on the mean-pooled states) instead of BERT's pooler + classifier, now the library's
  `PrefixConfig(train_head=True, head_pooling="mean")` (the committed rows of it were rerun through that
  option).

The contenders live in `encoder_contenders.py`.

The frozen-feature contenders (probe, head-only) train on features computed once by the frozen encoder; their
s/step is the median head step plus the median time of that frozen forward on a training batch.
Writes the markdown report and a json of every run; `--resume` skips runs already in the json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import get_scheduler

from encoder_contenders import (
    BUILDERS,
    DATASET,
    MODEL,
    Contender,
    Split,
    batch_rows,
    cached_contender,
    frozen_features,
    load_task,
)
from prefixtune.encoder_models import load_encoder

HERE = Path(__file__).resolve().parent

# name -> kind, learning rates swept at the first seed, fixed options. A row with "lr_from" is a lever: it takes
# the learning rate its source picked on validation (not swept; said so in the report) and runs at the first
# --lever-seeds seeds, or at its "num_seeds".
PLAN: dict[str, dict] = {
    "prefix+head": {
        "kind": "prefix",
        "lrs": [3e-3, 1e-2, 3e-2],
        "method": "prefix",
        "m": 16,
        "convention": "unshifted",
    },
    "linear probe": {"kind": "probe", "lrs": [1e-3, 3e-3, 1e-2, 3e-2]},
    "head-only": {"kind": "head", "lrs": [1e-3, 3e-3, 1e-2, 3e-2]},
    "full FT": {"kind": "full", "lrs": [2e-5, 5e-5]},
    "prefix+mean-pool head": {
        "kind": "prefix_mean",
        "lr_from": "prefix+head",
        "num_seeds": 2,  # the best lever: every seed, as the main rows
        "method": "prefix",
        "m": 16,
        "convention": "unshifted",
    },
    "kv+head": {"kind": "prefix", "lr_from": "prefix+head", "method": "kv", "m": 16, "convention": "unshifted"},
}


def train_and_score(contender: Contender, lr: float, data: dict[str, Split], args: argparse.Namespace, seed: int):
    """AdamW for `args.steps` steps (linear decay, 6% warmup, clip 1.0) on seeded batches; accuracies."""
    optimizer = torch.optim.AdamW(contender.params, lr=lr)
    scheduler = get_scheduler("linear", optimizer, round(0.06 * args.steps), args.steps)
    for module in contender.modules:
        module.train()
    times, losses = [], []
    for step in range(args.steps):
        start = time.perf_counter()
        loss = contender.loss(batch_rows(len(data["train"].ids), step, args.batch_size, seed))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(contender.params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    for module in contender.modules:
        module.eval()
    result = {
        "params": sum(p.numel() for p in contender.params),
        "parts": contender.parts,
        "s_per_step": statistics.median(times) + contender.extra_s_per_step,
        "train_loss_last50": statistics.fmean(losses[-50:]),
    }
    for split in ("validation", "test"):
        predictions = contender.logits(split).argmax(-1)
        result[split] = float((predictions == torch.tensor(data[split].labels)).float().mean())
    return result


def planned_runs(args: argparse.Namespace, picked: dict[str, float]) -> list[tuple[str, float, int]]:
    """(name, lr, seed) of the runs still to do given the lrs picked so far: the sweep at the first seed, then
    the picked lr at the other seeds; rows with `lr_from` at their source's pick."""
    runs = []
    for name in args.methods:
        spec = PLAN[name]
        if "lr_from" in spec:
            if spec["lr_from"] in picked:
                seeds = args.seeds[: spec.get("num_seeds", args.lever_seeds)]
                runs += [(name, picked[spec["lr_from"]], seed) for seed in seeds]
            continue
        runs += [(name, lr, args.seeds[0]) for lr in spec["lrs"]]
        if name in picked:
            runs += [(name, picked[name], seed) for seed in args.seeds[1:]]
    return runs


def pick(results: list[dict]) -> dict[str, float]:
    """Per swept method, the lr with the best validation accuracy at the first seed (never test)."""
    best: dict[str, dict] = {}
    for r in results:
        if "lr_from" in PLAN[r["method"]] or not r["is_sweep"]:
            continue
        if r["method"] not in best or r["validation"] > best[r["method"]]["validation"]:
            best[r["method"]] = r
    return {name: r["lr"] for name, r in best.items()}


def swept(name: str, results: list[dict], first_seed: int) -> bool:
    spec = PLAN[name]
    done = {r["lr"] for r in results if r["method"] == name and r["seed"] == first_seed}
    return "lr_from" in spec or set(spec["lrs"]) <= done


def run_all(args: argparse.Namespace, data: dict[str, Split], pad_id: int, results: list[dict]) -> list[dict]:
    """Every planned run not yet in `results`, in plan order (sweeps first, then seeds), saving after each."""
    done = {(r["method"], r["lr"], r["seed"]) for r in results}
    feats = None
    while True:
        picked = {k: v for k, v in pick(results).items() if swept(k, results, args.seeds[0])}
        todo = [run for run in planned_runs(args, picked) if run not in done]
        if not todo:
            return results
        name, lr, seed = todo[0]
        spec = PLAN[name]
        if spec["kind"] in ("probe", "head"):
            if feats is None:
                batches = [
                    batch_rows(len(data["train"].ids), step, args.batch_size, s)
                    for s in args.seeds
                    for step in range(args.steps)
                ]
                feats = frozen_features(data, pad_id, batches)
            contender = cached_contender(spec, seed, data, feats)
        else:
            contender = BUILDERS[spec["kind"]](spec, seed, data, pad_id)
        start = time.perf_counter()
        result = {"method": name, "lr": lr, "seed": seed, **train_and_score(contender, lr, data, args, seed)}
        result["is_sweep"] = seed == args.seeds[0] and "lr_from" not in spec
        result["wall_s"] = time.perf_counter() - start
        print(json.dumps(result), flush=True)
        results.append(result)
        done.add((name, lr, seed))
        save_json(args, results)


def save_json(args: argparse.Namespace, results: list[dict]) -> None:
    Path(args.json).write_text(json.dumps({"settings": settings(args), "runs": results}, indent=1) + "\n")


def settings(args: argparse.Namespace) -> dict:
    return {
        "model": MODEL,
        "dataset": DATASET,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "seeds": args.seeds,
        "val_limit": args.val_limit,
        "test_limit": args.test_limit,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.fmean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def table_rows(results: list[dict]) -> list[str]:
    """One row per method: at its picked lr, test accuracy over seeds, parameters, median s/step."""
    picked = pick(results)
    lines = []
    for name, spec in PLAN.items():
        lr = picked.get(spec.get("lr_from", name))
        runs = [r for r in results if r["method"] == name and r["lr"] == lr]
        if not runs:
            continue
        how = f"= {spec['lr_from']}'s, not swept" if "lr_from" in spec else "picked on validation"
        parts = ", ".join(f"{k} {v:,}" for k, v in runs[0]["parts"].items())
        lines.append(
            f"| {name} | {lr:g} ({how}) | {runs[0]['params']:,} ({parts}) | {len(runs)} | "
            f"{mean_std([r['validation'] for r in runs])} | {mean_std([r['test'] for r in runs])} | "
            f"{statistics.median(r['s_per_step'] for r in runs):.3f} |"
        )
    return lines


def canonical_command(argv: list[str]) -> str:
    """The one command that runs every row of this report: `argv` less `--resume` and `--methods ...` (a
    report may be collected in pieces with them)."""
    kept, skipping = [], False
    for token in argv:
        if token.startswith("--"):
            skipping = token == "--methods"
            if token == "--resume":
                continue
        if not skipping:
            kept.append(token)
    return " ".join(["OMP_NUM_THREADS=1 PYTHONPATH=src:bench .venv/bin/python bench/encoder_quality.py", *kept])


def write_markdown(args: argparse.Namespace, results: list[dict], command: str) -> str:
    s = settings(args)
    lines = [
        "# Encoder quality: prefix + head vs linear probe vs head-only vs full fine-tuning (issue 12)",
        "",
        f"Command: `{command}`",
        "",
        f"all-MiniLM-L6-v2 on the built-in Rotten Tomatoes split; {s['steps']} steps of batch {s['batch_size']} "
        f"(max {s['max_length']} tokens), the same seeded batches, AdamW, linear decay with 6% warmup, clip 1.0 "
        f"for every method; lr swept at seed {s['seeds'][0]} and picked on validation ({s['val_limit']} "
        f"examples), then rerun at the other seeds; test = {s['test_limit']} held-out examples. torch "
        f"{s['torch']}, {s['threads']} thread(s). Accuracy in %, mean ± std over the seeds listed. "
        "The machine: 2 CPU cores shared with other jobs, so s/step moves with their load (compare rows of "
        "one table only); the probe's and head-only's s/step include the frozen forward of a batch.",
        "",
        "| method | lr | trainable params | seeds | validation acc | test acc | s/step (median) |",
        "|---|---|---|---|---|---|---|",
        *table_rows(results),
        "",
        "Every run (the sweep included):",
        "",
        "| method | lr | seed | validation | test | train loss (last 50 steps) | s/step |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {r['method']} | {r['lr']:g} | {r['seed']} | {100 * r['validation']:.1f} | {100 * r['test']:.1f} | "
            f"{r['train_loss_last50']:.3f} | {r['s_per_step']:.3f} |"
            for r in results
        ],
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(PLAN), choices=list(PLAN))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--lever-seeds", type=int, default=1, help="seeds for the rows that take another's lr")
    parser.add_argument("--val-limit", type=int, default=300, help="first N of the 500 validation examples")
    parser.add_argument("--test-limit", type=int, default=None, help="first N of the 1,000 test examples")
    parser.add_argument("--out", default=str(HERE / "RESULTS-encoder-quality.md"))
    parser.add_argument("--json", default=str(HERE / "results-encoder-quality.json"))
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --json")
    args = parser.parse_args()
    _, tokenizer = load_encoder(MODEL)
    data = load_task(tokenizer, args.max_length, args.val_limit, args.test_limit)
    args.val_limit, args.test_limit = len(data["validation"].ids), len(data["test"].ids)
    results = json.loads(Path(args.json).read_text())["runs"] if args.resume and Path(args.json).exists() else []
    results = run_all(args, data, tokenizer.pad_token_id, results)
    report = write_markdown(args, results, canonical_command(sys.argv[1:]))
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
