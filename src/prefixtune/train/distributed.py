"""What changes when training runs in several processes (torchrun, accelerate launch, FSDP, DeepSpeed).

One job: the accelerator for a run and the few collective operations the loop needs, so that N processes
train the same adapter as one process with the same global batch (issue 13). Prefix parameters are tiny
(L x m x d), so on plain data parallelism the model is not wrapped in DistributedDataParallel: each process
accumulates its gradients locally (through `PrefixModel.compile_once`) and one all-reduce of the flattened
adapter gradients per optimizer step makes them global. Engines that shard the frozen base (FSDP, DeepSpeed)
wrap the model through accelerate and reduce gradients themselves. Depends on torch and accelerate only.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import DistributedType

# Engines that must wrap the model themselves (they own its parameters' layout or the optimizer step).
WRAPPING_ENGINES = frozenset(
    {DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM, DistributedType.XLA}
)


def make_accelerator(mixed_precision: str) -> Accelerator:
    """An Accelerator for a run: bf16 autocast where the GPU supports it when `auto`.

    Without a GPU (or other accelerator) it is told so, which is what makes `torchrun` / `accelerate launch`
    on CPUs a gloo process group; otherwise accelerate sees no backend and every process trains alone on
    its share of the batch, each writing the same outputs (the 2-process mismatch of issue 13).
    """
    precision = mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(mixed_precision=precision, cpu=not torch.accelerator.is_available())


def wraps_model(accelerator: Accelerator) -> bool:
    """Whether the engine (FSDP, DeepSpeed, ...) wraps the model and reduces its gradients itself."""
    return accelerator.distributed_type in WRAPPING_ENGINES


def is_multiprocess() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_across_processes(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of `values` over all processes (the values themselves with one process)."""
    if not is_multiprocess():
        return list(values)
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.tolist()


def broadcast_parameters(params: list[torch.nn.Parameter]) -> None:
    """Give every process rank 0's values (an init that read anything process-local still agrees)."""
    if not is_multiprocess():
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Replace every process's gradients by their sum over processes, in one collective.

    The loop scales each process's loss by 1 / (label tokens of the whole global step), so the sum is the
    gradient of the global token-mean loss: exactly what one process computes over the same rows.
    """
    if not is_multiprocess():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of numels,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        p.grad = flat[offset : offset + g.numel()].view_as(p).clone()
        offset += g.numel()


def micro_batch_seed(seed: int, micro_index: int, rank: int) -> int:
    """Seed for dropout in one process's share of micro-batch `micro_index`.

    A pure function of (seed, micro-batch, rank), like the batch rows: resumption needs no RNG state, and
    processes never draw the same dropout masks (they would with one global seed).
    """
    return ((seed * 1_000_003 + micro_index) * 1_009 + rank) % (2**63)


def local_numel(module: torch.nn.Module) -> tuple[int, int]:
    """(elements this process holds, elements in all) of `module`'s parameters; they differ when sharded."""
    local = total = 0
    for p in module.parameters():
        total += p.numel()
        local += p.to_local().numel() if hasattr(p, "to_local") else p.numel()  # FSDP2 keeps DTensor shards
    return local, total
