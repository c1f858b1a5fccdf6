"""Core benchmark (issue 2): training step (and its compile part), reference vs compiled path, greedy decoding.

Side by side in one process, GPT-2-small shape (12 layers, d=768, random weights), batch 8 x 128 tokens,
m in {16, 64}. Every variant is timed round-robin (one repetition of each in turn) so machine noise hits them
alike. The tables give medians after warm-up and two ratios to the floor: the ratio of the medians, and the
median over rounds of the ratio within a round (adjacent timings share the machine's load, so this one is
less disturbed by other processes on a shared machine).

    .venv/bin/python bench/run_core.py            # writes bench/RESULTS-core.md and bench/results-core.json
    .venv/bin/python bench/run_core.py --quick    # a smaller smoke run (not for the table)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import peft
import torch
import transformers

import prefixtune as pt

HERE = Path(__file__).parent


def gpt2_small(layers: int, width: int) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=layers, n_embd=width, n_head=width // 64, n_positions=1024)
    model = transformers.GPT2LMHeadModel(config)
    model.set_attn_implementation("sdpa")
    return model.eval()


def train_step_fn(model_forward: Callable, params: list[torch.nn.Parameter], ids, labels) -> Callable[[], None]:
    opt = torch.optim.AdamW(params, lr=1e-3) if params else None

    def step() -> None:
        loss = model_forward(ids, labels)
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step


def variants_training(m: int, ids: torch.Tensor, layers: int, width: int) -> dict[str, Callable[[], None]]:
    labels = ids.clone()
    out: dict[str, Callable[[], None]] = {}
    base = gpt2_small(layers, width)
    base.train()

    def floor(ids, labels):
        # Backward through every layer down to the embeddings, as any per-layer prefix needs; no weight grads.
        embeds = base.get_input_embeddings()(ids).detach().requires_grad_()
        return base(inputs_embeds=embeds, labels=labels).loss

    base.requires_grad_(False)
    out["base (floor)"] = train_step_fn(floor, [], ids, labels)
    for method in ("prefix", "kv", "prompt"):
        model = gpt2_small(layers, width)
        model.train()
        pm = pt.attach(model, pt.PrefixConfig(method=method, num_virtual_tokens=m, seed=0))
        out[f"prefixtune {method}"] = train_step_fn(
            lambda i, lab, pm=pm: pm(input_ids=i, labels=lab).loss, pm.trainable_parameters(), ids, labels
        )
    for name, cfg in (
        ("PEFT prefix tuning", peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=m)),
        ("PEFT prompt tuning", peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=m)),
    ):
        model = gpt2_small(layers, width)
        model.train()
        pmodel = peft.get_peft_model(model, cfg)
        params = [p for p in pmodel.parameters() if p.requires_grad]
        out[name] = train_step_fn(
            lambda i, lab, pmodel=pmodel: pmodel(input_ids=i, labels=lab).loss, params, ids, labels
        )
    return out


def variants_compile(m: int, layers: int, width: int) -> dict[str, Callable[[], None]]:
    """Compiling alone, forward and backward: the per-step cost a method adds before the batch runs."""
    out: dict[str, Callable[[], None]] = {}
    for method in ("prefix", "kv", "prompt"):
        model = gpt2_small(layers, width)
        model.train()
        pm = pt.attach(model, pt.PrefixConfig(method=method, num_virtual_tokens=m, seed=0))

        def compile_and_backward(pm=pm) -> None:
            kv = pm.compile()
            torch.autograd.backward([*kv.keys, *kv.values], [torch.ones_like(t) for t in (*kv.keys, *kv.values)])

        out[f"prefixtune {method}"] = compile_and_backward
    return out


def variants_reference(m: int, ids: torch.Tensor, layers: int, width: int) -> dict[str, Callable[[], None]]:
    pm = pt.attach(gpt2_small(layers, width), pt.PrefixConfig(method="prefix", num_virtual_tokens=m, seed=0))
    mask = torch.ones_like(ids)

    def compiled() -> None:
        with torch.no_grad():
            pm(input_ids=ids, attention_mask=mask)

    return {
        "compiled path (compile + forward)": compiled,
        "reference path (literal)": lambda: pt.reference_forward(pm, ids, mask),
    }


def variants_decoding(m: int, ids: torch.Tensor, layers: int, width: int, new: int) -> dict[str, Callable[[], None]]:
    model = gpt2_small(layers, width)
    pm = pt.attach(model, pt.PrefixConfig(method="prefix", num_virtual_tokens=m, seed=0))
    mask = torch.ones_like(ids)
    kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    bare = gpt2_small(layers, width)

    return {
        "bare base model": lambda: bare.generate(input_ids=ids, attention_mask=mask, **kwargs),
        "prefixtune prefix": lambda: pm.generate(input_ids=ids, attention_mask=mask, **kwargs),
    }


def measure(variants: dict[str, Callable[[], None]], reps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per repetition of every variant, timed round-robin so machine noise hits them alike."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def round_ratio(times: dict[str, list[float]], name: str, floor: str) -> float:
    """Median over rounds of (variant / floor) within the same round: robust to slow drifts in machine load."""
    return statistics.median(t / f for t, f in zip(times[name], times[floor], strict=True))


def table(title: str, times: dict[str, list[float]], floor: str) -> str:
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        f"### {title}",
        "",
        f"Ratios are to the {floor} row: of the medians, and the median of the per-round ratios.",
        "",
        "| variant | median s | ratio of medians | per-round ratio |",
        "|---|---:|---:|---:|",
    ]
    for name, t in med.items():
        lines.append(f"| {name} | {t:.4f} | {t / med[floor]:.3f} | {round_ratio(times, name, floor):.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 reps (smoke test, not for the table)")
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    layers, width, B, T, new = (12, 768, 8, 128, 64) if not args.quick else (2, 128, 2, 16, 4)
    reps, warmup = (args.reps, 1) if not args.quick else (2, 1)
    torch.manual_seed(0)
    ids = torch.randint(0, 50000 if not args.quick else 1000, (B, T))
    results: dict[str, dict[str, dict[str, float]]] = {}
    md = [
        "# Core benchmark results",
        "",
        f"Command: `.venv/bin/python bench/run_core.py` — {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"peft {peft.__version__}. GPT-2-small shape ({layers} layers, d={width}, random weights), batch {B} x {T} "
        f"tokens; medians of {reps} round-robin repetitions after warm-up.",
        "",
    ]
    for m in (16, 64):
        train = measure(variants_training(m, ids, layers, width), reps, warmup)
        comp = measure(variants_compile(m, layers, width), reps, warmup)
        ref = measure(variants_reference(m, ids, layers, width), reps, warmup)
        dec = measure(variants_decoding(m, ids, layers, width, new), reps, warmup)
        results[f"m={m}"] = {"train_step_s": train, "compile_s": comp, "forward_s": ref, "generate_s": dec}
        md += [f"## m = {m}", ""]
        md.append(table("Training step (forward + backward + optimizer step)", train, "base (floor)"))
        floor_step = statistics.median(train["base (floor)"])
        md += [
            "### Compiling alone (forward + backward), the part of a training step spent before the batch runs",
            "",
            "| method | median ms | share of the floor's step |",
            "|---|---:|---:|",
            *(
                f"| {k} | {1000 * statistics.median(v):.1f} | {statistics.median(v) / floor_step:.3f} |"
                for k, v in comp.items()
            ),
            "",
        ]
        md.append(table("Forward: literal reference path vs compiled path", ref, "compiled path (compile + forward)"))
        bare = "bare base model"
        md += [
            f"### Greedy decoding, batch {B}, {new} new tokens",
            "",
            "| variant | median s | tokens/s | throughput vs bare (of medians) | throughput vs bare (per round) |",
            "|---|---:|---:|---:|---:|",
        ]
        for k, v in dec.items():
            t = statistics.median(v)
            md.append(
                f"| {k} | {t:.3f} | {B * new / t:.1f} | {statistics.median(dec[bare]) / t:.3f} "
                f"| {1 / round_ratio(dec, k, bare):.3f} |"
            )
        md.append("")
    md.append("How to read these numbers, and the targets they are held against: `bench/README.md`.")
    if not args.quick:
        (HERE / "RESULTS-core.md").write_text("\n".join(md) + "\n")
        (HERE / "results-core.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
