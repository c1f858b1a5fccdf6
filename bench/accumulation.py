"""Gradient accumulation: compiling once per optimizer step (`PrefixModel.compile_once`) vs once per micro-batch.

Side by side in one process, GPT-2-small shape (12 layers, d=768, random weights): one optimizer step over
4 micro-batches of 2 x 128 tokens (the 8 x 128 batch of `run_core.py`, accumulated), for methods "prefix"
and "prompt" at m in {16, 64}, against the floor (the frozen model back-propagating to its inputs over the
same micro-batches). Round-robin repetitions; medians and the median of per-round ratios.

    .venv/bin/python bench/accumulation.py    # writes bench/RESULTS-accumulation.md
"""

from __future__ import annotations

import argparse
import contextlib
import platform
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

import prefixtune as pt
from run_core import gpt2_small, measure, table

HERE = Path(__file__).parent


def variants(m: int, micro: list[torch.Tensor], layers: int, width: int) -> dict[str, Callable[[], None]]:
    base = gpt2_small(layers, width)
    base.train()
    base.requires_grad_(False)

    def floor() -> None:
        for ids in micro:
            embeds = base.get_input_embeddings()(ids).detach().requires_grad_()
            (base(inputs_embeds=embeds, labels=ids).loss / len(micro)).backward()

    out: dict[str, Callable[[], None]] = {"base (floor)": floor}
    for method in ("prefix", "prompt"):
        model = gpt2_small(layers, width)
        model.train()
        pm = pt.attach(model, pt.PrefixConfig(method=method, num_virtual_tokens=m, seed=0))
        opt = torch.optim.AdamW(pm.trainable_parameters(), lr=1e-3)
        for once in (False, True):

            def step(pm=pm, opt=opt, once=once) -> None:
                with pm.compile_once() if once else contextlib.nullcontext():
                    for ids in micro:
                        (pm(input_ids=ids, labels=ids).loss / len(micro)).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            out[f"prefixtune {method}, compile {'once per step' if once else 'per micro-batch'}"] = step
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="tiny shapes (smoke test, not for the table)")
    args = parser.parse_args()
    layers, width, T, vocab = (12, 768, 128, 50000) if not args.quick else (2, 128, 16, 1000)
    reps = args.reps if not args.quick else 2
    torch.manual_seed(0)
    micro = [torch.randint(0, vocab, (2, T)) for _ in range(4)]
    md = [
        "# Gradient accumulation: compile once per step vs per micro-batch",
        "",
        f"Command: `.venv/bin/python bench/accumulation.py` — {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, transformers {transformers.__version__}. "
        f"GPT-2-small shape ({layers} layers, d={width}, random weights); one optimizer step = 4 micro-batches "
        f"of 2 x {T} tokens; medians of {reps} round-robin repetitions after one warm-up.",
        "",
    ]
    for m in (16, 64):
        times = measure(variants(m, micro, layers, width), reps, 1)
        md += [f"## m = {m}", "", table("Optimizer step over 4 micro-batches", times, "base (floor)")]
    if not args.quick:
        (HERE / "RESULTS-accumulation.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
