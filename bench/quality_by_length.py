"""Accuracy by prompt length, method against method on the same seeds and test examples (issue 14).

The explanation offered for `kv` trailing LoRA on debates-2016 is Prefix-Tuning+'s: a prefix's keys share one
softmax with every input key, so the longer the input, the smaller the prefix's share of each head's output.
If that is what costs `kv` accuracy, its deficit grows with prompt length. This reads the quality suite's
runs that recorded which test examples they got right (`test_correct`), at the rate the suite picked for
each method, on the seeds every method was run with, splits the test prompts into equal-count length bins
(tokens of the prompt, as scored) and gives each method's accuracy per bin, paired on the same examples.

    PYTHONPATH=src:bench .venv/bin/python bench/quality_by_length.py --task debates-2016 --budget 0.002 \\
        --methods ours-kv peft-lora --out bench/RESULTS-quality-by-length.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

from quality import load_task
from quality_suite import MAX_LENGTH, summarize


def chosen_runs(records: list[dict], task: str, budget: float, method: str, steps: int) -> dict[int, dict]:
    """seed -> run of `method` at the rate the suite picks (best mean validation), with per-example results."""
    cell = [
        r for r in records if (r["task"], r["budget"], r["method"], r.get("steps")) == (task, budget, method, steps)
    ]
    if not cell:
        raise SystemExit(f"no {method} runs of {task} at budget {budget} and {steps} steps in the JSONL")
    (row,) = summarize(cell)
    return {r["seed"]: r for r in cell if r["lr"] == row["lr"] and "test_correct" in r}


def length_bins(lengths: list[int], count: int) -> list[list[int]]:
    """Example indices in `count` bins of (nearly) equal size, shortest prompts first."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[b * len(order) // count : (b + 1) * len(order) // count] for b in range(count)]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def report(args: argparse.Namespace) -> str:
    records = [json.loads(line) for line in Path(args.jsonl).read_text().splitlines()]
    runs = {m: chosen_runs(records, args.task, args.budget, m, args.steps) for m in args.methods}
    seeds = sorted(set.intersection(*(set(by_seed) for by_seed in runs.values())))
    if not seeds:
        raise SystemExit("no seed has per-example results (test_correct) for every method; run them first")
    data = load_task(args.task, None, None, MAX_LENGTH)
    lengths = [len(p) for p in data["test"]["prompts"]]
    for m in args.methods:
        for seed in seeds:
            if len(runs[m][seed]["test_correct"]) != len(lengths):
                raise SystemExit(f"{m} seed {seed} was scored on another test split ({len(lengths)} examples now)")
    bins = length_bins(lengths, args.bins)

    def acc(method: str, indices: list[int]) -> float:
        """Mean over seeds of the accuracy on `indices`."""
        return statistics.mean(
            sum(runs[method][s]["test_correct"][i] == "1" for i in indices) / len(indices) for s in seeds
        )

    first = args.methods[0]
    lrs = ", ".join(f"{m} {runs[m][seeds[0]]['lr']:g}" for m in args.methods)
    command = "PYTHONPATH=src:bench .venv/bin/python bench/quality_by_length.py " + shlex.join(sys.argv[1:])
    lines = [
        f"# Accuracy by prompt length: {args.task}, budget {args.budget:.1%}, {args.steps} steps",
        "",
        f"Command: `{command}`",
        "",
        f"Test split n={len(lengths)}, in {args.bins} bins of equal count by prompt tokens; seeds {seeds} "
        f"(mean over them); rates as the suite picked them ({lrs}). Same examples for every method.",
        "",
        _row(["prompt tokens", "n", *args.methods, *(f"{first} - {m} (points)" for m in args.methods[1:])]),
        "|---|---:|" + "---:|" * (2 * len(args.methods) - 1),
    ]
    for indices in [*bins, list(range(len(lengths)))]:
        span = f"{min(lengths[i] for i in indices)}-{max(lengths[i] for i in indices)}"
        label = f"all ({span})" if len(indices) == len(lengths) else span
        scores = [acc(m, indices) for m in args.methods]
        gaps = [f"{100 * (scores[0] - s):+.1f}" for s in scores[1:]]
        lines.append(_row([label, str(len(indices)), *(f"{s:.3f}" for s in scores), *gaps]))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="debates-2016")
    parser.add_argument("--budget", type=float, default=0.002)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--methods", nargs="+", default=["ours-kv", "peft-lora"])
    parser.add_argument("--bins", type=int, default=3)
    parser.add_argument("--jsonl", default="bench/results-quality-suite.jsonl")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    text = report(args)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
