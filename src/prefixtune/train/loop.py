"""The training loop: AdamW on the adapter parameters only, with schedule, accumulation, clipping and evals.

One job: given an attached prefix model, encoded training data and validation examples, run optimizer steps,
evaluate every N steps, keep the best adapter by the validation metric and write resumable checkpoints. It
goes through `accelerate.Accelerator`, so `torchrun` and `accelerate launch` run it on several processes
(`train.distributed` holds what differs there); with one process it is plain PyTorch. Batches and dropout
seeds are a pure function of (seed, step, process), so `--resume` continues exactly where the checkpoint
left off and a CPU run is deterministic for its seed. The loss is the mean over the label tokens of the whole
global step (all micro-batches, all processes), so N processes train the adapter one process trains on the
same global batch. Loading models and files is `train.run`'s job.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import get_scheduler

from prefixtune.parametrizations import parametrization_class
from prefixtune.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from prefixtune.train.config import TrainConfig
from prefixtune.train.data import Encoded
from prefixtune.train.distributed import (
    broadcast_parameters,
    local_numel,
    micro_batch_seed,
    sum_across_processes,
    sum_gradients,
    wraps_model,
)
from prefixtune.train.distributed import make_accelerator as _make_accelerator
from prefixtune.train.evaluate import evaluate, primary_metric
from prefixtune.train.formats import Example, TaskFormat
from prefixtune.train.metric_log import MetricLogger
from prefixtune.train.objective import NextTokenObjective, Objective
from prefixtune.train.progress import ProgressCallback, ProgressEvent

logger = logging.getLogger(__name__)

SCHEDULER_NAMES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


@dataclass(slots=True)
class LoopResult:
    """What a finished run reports."""

    steps: int
    seconds: float
    tokens: int
    final_loss: float | None
    metric: str
    best_metric: float | None
    best_step: int | None
    base_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def make_accelerator(config: TrainConfig) -> Accelerator:
    """An Accelerator for the config (see `train.distributed.make_accelerator`)."""
    return _make_accelerator(config.mixed_precision)


def batch_rows(num_examples: int, micro_index: int, batch_size: int, seed: int, rank: int, world: int) -> list[int]:
    """Example indices of one process's share of global micro-batch `micro_index`.

    Each epoch is a fresh permutation seeded by (seed, epoch); the last incomplete batch is dropped so
    every optimizer step sees the same number of rows. Pure function: resumption needs no sampler state.
    """
    global_batch = batch_size * world
    per_epoch = max(num_examples // global_batch, 1)
    epoch, position = divmod(micro_index, per_epoch)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_examples, generator=generator).tolist()
    order = order * math.ceil(global_batch / max(num_examples, 1))  # tiny datasets: wrap around
    start = position * global_batch + rank * batch_size
    return order[start : start + batch_size]


class Trainer:
    """Runs one training job on an attached prefix model (see `train.run.run_training` for the setup).

    Args:
        model: the prefix model (from `prefixtune.attach`), adapter `config.adapter_name` attached.
        tokenizer: its tokenizer (pad token set).
        train_set: encoded training examples.
        eval_examples: validation examples (None: no evaluation; the final adapter is saved).
        fmt: the task format, stored in the adapter's metadata.
        config: the run's `TrainConfig`.
        metric_logger: where metrics go (None: kept in `history` only).
        run_dir: where `adapter/` and `checkpoint/` are written.
        accelerator: reused if given, else made from the config.
        objective: what a step minimizes (`train.objective`); default the next-token loss of a causal LM.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        train_set: Sequence[Encoded],
        eval_examples: Sequence[Example] | None,
        fmt: TaskFormat,
        config: TrainConfig,
        metric_logger: MetricLogger | None,
        run_dir: str | Path,
        accelerator: Accelerator | None = None,
        objective: Objective | None = None,
    ) -> None:
        self.config, self.fmt, self.tokenizer = config, fmt, tokenizer
        self.train_set, self.eval_examples = list(train_set), eval_examples
        self.metric_logger, self.run_dir = metric_logger, Path(run_dir)
        self.accelerator = accelerator or make_accelerator(config)
        self.name = config.adapter_name
        self.metric = primary_metric(fmt)
        self.pm = model
        self.params = list(model.trainable_parameters(self.name))
        adapter_config = model.adapter_config(self.name)
        method_lr = parametrization_class(adapter_config.method).default_learning_rate
        lr = config.resolved_learning_rate(adapter_config.reparam_hidden is not None, method_lr)
        optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=config.weight_decay)
        self.scheduler = get_scheduler(
            SCHEDULER_NAMES[config.schedule],
            optimizer,
            num_warmup_steps=config.resolved_warmup_steps(),
            num_training_steps=config.max_steps,
        )
        # Plain data parallelism leaves the model unwrapped (see `train.distributed`); FSDP and DeepSpeed wrap it.
        self.is_wrapped = wraps_model(self.accelerator)
        if self.is_wrapped:
            self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
            self.params = [p for p in self.model.parameters() if p.requires_grad]
            local, total = local_numel(self.model)
            logger.info(
                "%s: this process holds %d of the model's %d elements", self.accelerator.distributed_type, local, total
            )
        else:
            self.model, self.optimizer = model, self.accelerator.prepare(optimizer)
            broadcast_parameters(self.params)
        self.objective = objective or NextTokenObjective(tokenizer.pad_token_id)
        self.state = TrainState()
        self.history: list[dict[str, Any]] = []

    # -- steps -------------------------------------------------------------------------------------------

    def _micro_batch(self, micro_index: int) -> dict[str, torch.Tensor]:
        acc = self.accelerator
        rows = batch_rows(
            len(self.train_set),
            micro_index,
            self.config.batch_size,
            self.config.seed,
            acc.process_index,
            acc.num_processes,
        )
        batch = self.objective.collate([self.train_set[i] for i in rows])
        return {k: v.to(acc.device) for k, v in batch.items()}

    def _accumulation(self) -> AbstractContextManager[None]:
        """Compile the adapter once per optimizer step rather than once per micro-batch (unwrapped model only:
        a wrapping engine expects the parameters' gradients inside each backward)."""
        if self.config.grad_accum > 1 and not self.is_wrapped:
            return self.pm.compile_once()
        return nullcontext()

    def _sync(self, micro: int) -> AbstractContextManager[None]:
        """A wrapping engine reduces gradients in the last micro-batch's backward only."""
        if self.is_wrapped and micro < self.config.grad_accum - 1:
            return self.accelerator.no_sync(self.model)
        return nullcontext()

    def _optimizer_step(self) -> tuple[float, int]:
        """One optimizer step over `grad_accum` micro-batches; returns (mean loss per label token, tokens).

        Both numbers are over the whole global step: every micro-batch of every process.
        """
        acc, cfg = self.accelerator, self.config
        first = self.state.step * cfg.grad_accum
        batches = [self._micro_batch(first + a) for a in range(cfg.grad_accum)]
        local_labels = sum(self.objective.label_count(b) for b in batches)
        (global_labels,) = sum_across_processes([float(local_labels)], acc.device)
        # A wrapping engine averages gradients over processes; the unwrapped path sums them (sum_gradients).
        scale = (acc.num_processes if self.is_wrapped else 1) / max(global_labels, 1.0)
        loss_sum, tokens = 0.0, 0
        with self._accumulation():
            for a, batch in enumerate(batches):
                torch.manual_seed(micro_batch_seed(cfg.seed, first + a, acc.process_index))  # dropout, if any
                names = [self.name] * batch["input_ids"].shape[0]
                with self._sync(a), acc.autocast():
                    decoder = {k: v for k, v in batch.items() if k.startswith("decoder_")}  # encoder-decoders
                    out = self.model(batch["input_ids"], batch["attention_mask"], adapter_names=names, **decoder)
                    total = self.objective.loss_sum(out, batch)
                    acc.backward(total * scale)
                loss_sum += total.detach().float().item()
                tokens += int(batch["attention_mask"].sum())
        if not self.is_wrapped:
            sum_gradients(self.params)
        if cfg.max_grad_norm is not None:
            acc.clip_grad_norm_(self.params, cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, all_tokens = sum_across_processes([loss_sum, float(tokens)], acc.device)
        return loss_sum / max(global_labels, 1.0), int(all_tokens)

    # -- evaluation and saving -----------------------------------------------------------------------------

    def _evaluate(self, adapter: str | None) -> dict[str, float]:
        assert self.eval_examples is not None
        result = evaluate(
            self.pm,
            self.tokenizer,
            self.eval_examples,
            self.fmt,
            adapter_name=adapter,
            batch_size=self.config.eval_batch_size,
        )
        return result.metrics

    def _log(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **metrics}
        self.history.append(record)
        if self.metric_logger is not None and self.accelerator.is_main_process:
            self.metric_logger.log(step, metrics)

    def save_adapter(self, path: Path) -> None:
        """Save the adapter with its task format (and training summary) in its metadata."""
        self.pm.set_adapter_metadata(
            self.name,
            {
                "task": self.fmt.to_dict(),
                "training": {
                    "data": self.config.data,
                    "step": self.state.step,
                    "metric": self.metric,
                    "best_metric": self.state.best_metric,
                    "best_step": self.state.best_step,
                },
            },
        )
        if self.accelerator.is_main_process:
            self.pm.save_adapter(path, self.name)

    def _eval_and_checkpoint(self) -> None:
        step = self.state.step
        if self.eval_examples:
            metrics = self._evaluate(self.name)
            self._log(step, {f"eval_{k}": v for k, v in metrics.items() if k != "n"})
            value = metrics[self.metric]
            if self.state.best_metric is None or value > self.state.best_metric:
                self.state.best_metric, self.state.best_step = value, step
                self.save_adapter(self.run_dir / "adapter")
        if self.accelerator.is_main_process:
            save_checkpoint(
                self.run_dir, self.params, self.optimizer, self.scheduler, self.state, self.config.to_dict()
            )
        self.accelerator.wait_for_everyone()  # no process runs ahead of (or exits before) rank 0's files

    # -- the run -------------------------------------------------------------------------------------------

    def resume(self) -> None:
        """Restore parameters, optimizer, scheduler, RNG and step from `run_dir/checkpoint/`."""
        self.state, _ = load_checkpoint(self.run_dir, self.params, self.optimizer, self.scheduler)
        logger.info("resumed from step %d", self.state.step)

    def run(self, on_progress: ProgressCallback | None = None) -> LoopResult:
        """Train to `max_steps` (from step 0, or from the resumed step) and return the summary.

        Args:
            on_progress: called on the main process after every optimizer step (the CLI draws a bar with it).
        """
        cfg, acc = self.config, self.accelerator
        if cfg.eval_base and self.eval_examples and self.state.step == 0:
            base = self._evaluate(None)  # the bare model, same code path: the run's zero-shot number
            self.state.base_metrics = base
            self._log(0, {f"base_{k}": v for k, v in base.items() if k != "n"})
        self.model.train()
        start_time, loss = time.perf_counter(), None
        while self.state.step < cfg.max_steps:
            t0 = time.perf_counter()
            loss, tokens = self._optimizer_step()
            self.state.step += 1
            self.state.tokens_seen += tokens
            lr = self.scheduler.get_last_lr()[0]
            if on_progress is not None and acc.is_main_process:
                speed = tokens / max(time.perf_counter() - t0, 1e-9)
                on_progress(ProgressEvent(self.state.step, cfg.max_steps, loss, lr, speed))
            if self.state.step % cfg.log_every == 0 or self.state.step == cfg.max_steps:
                self._log(self.state.step, {"loss": loss, "lr": lr, "tokens": self.state.tokens_seen})
            if (cfg.eval_every and self.state.step % cfg.eval_every == 0) or self.state.step == cfg.max_steps:
                self._eval_and_checkpoint()
                self.model.train()
        self.model.eval()
        if not self.eval_examples:
            self.save_adapter(self.run_dir / "adapter")
            self.accelerator.wait_for_everyone()
        return LoopResult(
            steps=self.state.step,
            seconds=time.perf_counter() - start_time,
            tokens=self.state.tokens_seen,
            final_loss=loss,
            metric=self.metric,
            best_metric=self.state.best_metric,
            best_step=self.state.best_step,
            base_metrics=self.state.base_metrics,
            history=self.history,
        )
