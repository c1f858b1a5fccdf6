"""Multi-process training (issue 13): `torchrun` and `accelerate launch` on 2 CPU processes (gloo) train the
adapter that one process trains on the same global batch; every file is written once; resume works across
world sizes; gradient accumulation under several processes is exact.

Real launchers in subprocesses, a tiny Llama, a few steps. The completion rows have different lengths, so
the processes hold different numbers of label tokens: a per-process mean loss would not match one process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prefixtune.config import PrefixConfig
from prefixtune.train.checkpoint import read_checkpoint
from prefixtune.train.config import TrainConfig
from prefixtune.train.distributed import micro_batch_seed
from prefixtune.train.metric_log import read_metrics
from prefixtune.train.run import run_training
from tests.train.conftest import save_tiny_model, write_jsonl

BIN = Path(sys.executable).parent
SEED = 3
ADAPTER = PrefixConfig(method="prefix", num_virtual_tokens=4, seed=SEED)  # the CLI seeds the adapter with --seed
STEPS, GLOBAL_BATCH = 4, 8


def _completion_rows(n: int) -> list[dict[str, str]]:
    words = ["red", "green", "blue", "yellow", "violet", "orange"]
    return [{"prompt": f"{i}:", "completion": " " + " ".join(words[: 1 + i % 6])} for i in range(n)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dist")
    return {
        "model": save_tiny_model("llama", root / "llama"),
        "data": write_jsonl(root / "train.jsonl", _completion_rows(40)),
        "root": root,
    }


def _config(setup, out: Path, **changes) -> TrainConfig:
    base = dict(
        model=str(setup["model"]),
        data=str(setup["data"]),
        output_dir=str(out),
        max_steps=STEPS,
        eval_every=2,
        batch_size=GLOBAL_BATCH,
        learning_rate=3e-2,
        progress=False,
        log_every=1,
        seed=SEED,
    )
    return TrainConfig(**{**base, **changes})


def _flags(cfg: TrainConfig) -> list[str]:
    flags = []
    for key in ("model", "data", "output_dir", "max_steps", "eval_every", "batch_size", "grad_accum"):
        flags += [f"--{key.replace('_', '-')}", str(getattr(cfg, key))]
    flags += ["--learning-rate", str(cfg.learning_rate), "--log-every", "1", "--seed", str(cfg.seed)]
    flags += ["--method", ADAPTER.method, "--num-virtual-tokens", str(ADAPTER.num_virtual_tokens), "--no-progress"]
    return [*flags, "--resume"] if cfg.resume else flags


# FSDP2 shards every decoder layer (the frozen base) and the root across the processes (docs/distributed.md).
FSDP_FLAGS = [
    "--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
    "--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer", "--fsdp_state_dict_type", "FULL_STATE_DICT",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(launcher: str, cfg: TrainConfig) -> subprocess.CompletedProcess:
    """Run `prefixtune train` in 2 processes under `torchrun`, `accelerate launch` or its FSDP."""
    module = ["-m", "prefixtune.cli.main", "train", *_flags(cfg)]
    if launcher == "torchrun":
        cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", *module]
    else:  # accelerate's torch.distributed launcher; on a machine without GPUs it makes a gloo group
        port = str(_free_port())
        cmd = [str(BIN / "accelerate"), "launch", "--num_processes", "2", "--num_machines", "1"]
        cmd += FSDP_FLAGS if launcher == "fsdp" else ["--multi_gpu"]
        cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port, *module]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _params(run_dir: Path) -> list[torch.Tensor]:
    return read_checkpoint(run_dir)["params"]


def _assert_same_adapter(a: Path, b: Path) -> None:
    x, y = (load_file(str(d / "adapter" / "adapter.safetensors")) for d in (a, b))
    assert x.keys() == y.keys()
    for key in x:
        torch.testing.assert_close(x[key], y[key], rtol=1e-5, atol=1e-6)
    for p, q in zip(_params(a), _params(b), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def _assert_written_once(run_dir: Path, reference: Path) -> None:
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [r["step"] for r in read_metrics(reference / "metrics.jsonl")]
    assert [r["tokens"] for r in records] == [r["tokens"] for r in read_metrics(reference / "metrics.jsonl")]
    assert (run_dir / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert {p.name for p in run_dir.iterdir()} == {p.name for p in reference.iterdir()}  # no stray temporaries


@pytest.fixture(scope="module")
def one_process(setup) -> Path:
    out = setup["root"] / "one"
    run_training(_config(setup, out), ADAPTER)
    return out


def test_torchrun_two_processes_train_the_one_process_adapter(setup, one_process):
    out = setup["root"] / "torchrun"
    done = _launch("torchrun", _config(setup, out, batch_size=GLOBAL_BATCH // 2))
    assert done.stdout.count("training summary") == 1  # printed by rank 0 only
    _assert_same_adapter(one_process, out)
    _assert_written_once(out, one_process)
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    reference = [r["loss"] for r in read_metrics(one_process / "metrics.jsonl")]
    assert losses == pytest.approx(reference, rel=1e-5)  # the global token mean, not rank 0's


def test_accelerate_launch_with_grad_accumulation_trains_the_one_process_adapter(setup, one_process):
    out = setup["root"] / "accelerate"
    _launch("accelerate", _config(setup, out, batch_size=GLOBAL_BATCH // 4, grad_accum=2))
    _assert_same_adapter(one_process, out)
    _assert_written_once(out, one_process)


def test_a_one_process_checkpoint_resumes_on_two_processes(setup, one_process):
    from prefixtune.train import loop as loop_module

    out = setup["root"] / "resumed"
    cfg = _config(setup, out)
    original = loop_module.Trainer._eval_and_checkpoint

    def interrupt_after_checkpoint(self):
        original(self)
        if self.state.step == 2:
            raise KeyboardInterrupt  # the process dies right after the checkpoint is written

    loop_module.Trainer._eval_and_checkpoint = interrupt_after_checkpoint
    try:
        with pytest.raises(KeyboardInterrupt):
            run_training(cfg, ADAPTER)
    finally:
        loop_module.Trainer._eval_and_checkpoint = original
    assert read_checkpoint(out)["state"]["step"] == 2
    # batch_size is per process: 2 x 4 is the same global batch, so the settings check accepts it.
    _launch("torchrun", cfg.replace(resume=True, batch_size=GLOBAL_BATCH // 2))
    assert read_checkpoint(out)["state"]["step"] == STEPS
    _assert_same_adapter(one_process, out)
    _assert_written_once(out, one_process)


def test_dropout_seeds_differ_per_process_and_step():
    seeds = {micro_batch_seed(0, step, rank) for step in range(4) for rank in range(2)}
    assert len(seeds) == 8


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="accelerate's FSDP needs 2 GPUs (it is not offered on gloo)")
def test_fsdp_through_accelerate_shards_the_base_and_trains_the_one_process_adapter(setup, one_process):
    out = setup["root"] / "fsdp"
    done = _launch("fsdp", _config(setup, out, batch_size=GLOBAL_BATCH // 2))
    held = [line for line in done.stderr.splitlines() if "this process holds" in line]
    assert len(held) == 2 and "FSDP" in held[0]
    local, total = (int(w) for w in held[0].split("holds ")[1].split(" elements")[0].split(" of the model's "))
    assert local < total  # the frozen base is sharded across the 2 processes
    _assert_same_adapter(one_process, out)
    _assert_written_once(out, one_process)
