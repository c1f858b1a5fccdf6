"""One training run end to end: load model and data, attach the adapter, train, save, plot.

One job: the setup and teardown around `train.loop.Trainer` that `prefixtune train` and `prefixtune demo`
share. The data is read before the adapter is attached: the default init ('auto') starts a decoder-only
model's adapter from the task's training examples (`train.task_init`). With an encoder (`all-minilm-l6-v2`,
a BERT-family directory, or a given encoder) it is read before the model too: its labels (or tags) size the
task head loaded with the model, and the loss is the head's.
Writes into `output_dir`: `adapter/` (the best adapter, task format in its metadata),
`checkpoint/` (resumable), `metrics.jsonl`, `curve.png` and `train_config.json`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefixtune.config import PrefixConfig
from prefixtune.core import has_bidirectional_attention, is_encoder_decoder
from prefixtune.encoder_models import encoder_directory, load_encoder
from prefixtune.errors import ConfigError
from prefixtune.io.atomic import atomic_write_text, remove_stale_temporaries
from prefixtune.models import load_model
from prefixtune.train.config import TrainConfig
from prefixtune.train.data import SkipReport, keep_valid, parse_records, resolve_task_format
from prefixtune.train.datasets import builtin_format, is_builtin, load_records
from prefixtune.train.encoder_data import encode_for_head, head_for
from prefixtune.train.formats import Example, TaskFormat
from prefixtune.train.loop import LoopResult, Trainer, make_accelerator
from prefixtune.train.metric_log import JsonlMetricLogger, read_metrics
from prefixtune.train.objective import HeadObjective, Objective
from prefixtune.train.plot import plot_curves
from prefixtune.train.progress import ProgressCallback
from prefixtune.train.seq2seq import encode_train_set
from prefixtune.train.task_init import resolve_init

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class TrainResult:
    """Where a run's outputs went and what it achieved."""

    output_dir: Path
    adapter_dir: Path
    curve_path: Path | None
    metrics_path: Path
    loop: LoopResult
    trainable_parameters: int
    total_parameters: int
    trainable_parts: dict[str, int]
    num_train_examples: int
    skipped: str
    is_main_process: bool = True  # False on the other processes of a torchrun / accelerate launch run


@dataclass(slots=True)
class TaskData:
    """Training and validation data of one task, parsed and checked."""

    fmt: TaskFormat
    train: list[Example]
    validation: list[Example] | None
    skips: SkipReport


def load_task_data(config: TrainConfig, tokenizer: Any) -> TaskData:
    """Read the training (and validation) records and build the task format.

    Built-in datasets bring their own format (template and verbalizer), which flags may override; files
    get one inferred from their records.
    """
    skips = SkipReport()
    skip = skips if config.skip_invalid else None
    train_records = load_records(config.data, "train", config.train_limit)
    fmt = resolve_task_format(
        train_records,
        builtin_format(config.data),
        kind=config.task,
        template=config.template,
        verbalizer=config.verbalizer,
    )
    train = parse_records(train_records, fmt, tokenizer, skip)
    eval_spec = config.eval_data or (config.data if is_builtin(config.data) else None)
    validation = None
    if eval_spec is not None:
        records = load_records(eval_spec, "validation", config.eval_limit)
        validation = parse_records(records, fmt, tokenizer, skip)
    return TaskData(fmt, train, validation, skips)


def is_encoder_run(config: TrainConfig, model: Any = None) -> bool:
    """Whether the run trains an encoder's task head (the given model, else `config.model`, is an encoder)."""
    if model is not None:
        return has_bidirectional_attention(model)
    return encoder_directory(config.model) is not None


def load_base(config: TrainConfig, model: Any = None, tokenizer: Any = None, fmt: TaskFormat | None = None):
    """The base model and its tokenizer: `model` when given (it needs its tokenizer), else `config.model` (an
    encoder with the head `fmt` needs when `fmt` is given); returns `(model, tokenizer)`."""
    if model is None and fmt is not None:
        model, tokenizer = load_encoder(config.model, head=head_for(fmt), labels=fmt.labels)
    elif model is None:
        model, tokenizer = load_model(config.model)
    if tokenizer is None:
        raise ConfigError("a tokenizer is required when passing a model")
    return model, tokenizer


def attach_new_adapter(config: TrainConfig, prefix_config: PrefixConfig, model: Any, tokenizer: Any):
    """Freeze `model` and attach the run's new adapter (gradient checkpointing on if asked)."""
    import prefixtune as pt

    pm = pt.attach(model, prefix_config, adapter_name=config.adapter_name, tokenizer=tokenizer)
    if config.gradient_checkpointing:
        pm.gradient_checkpointing_enable()
    return pm


def _encode_for_head(data: TaskData, tokenizer: Any, config: TrainConfig) -> tuple[list, Objective]:
    """An encoder run's training set and its head objective."""
    skips = data.skips if config.skip_invalid else None
    train_set = keep_valid(
        data.train, lambda e: encode_for_head(e, data.fmt, tokenizer, config.max_length), skips, "no records fit"
    )
    return train_set, HeadObjective(tokenizer.pad_token_id, per_token=data.fmt.kind == "token_classification")


def _check_resume(output_dir: Path, config: TrainConfig, num_processes: int) -> None:
    """Refuse --resume with settings that change the run. The number of processes may change if the global
    batch (batch_size x processes) does not: the rows of every step, and so the adapter, stay the same."""
    saved = output_dir / "train_config.json"
    if not saved.is_file():
        return
    before = json.loads(saved.read_text())
    ignore = {"resume", "progress", "output_dir", "batch_size"}  # a copied or moved run directory resumes too
    changed = sorted(k for k, v in config.to_dict().items() if k not in ignore and before.get(k) != v)
    if before.get("batch_size", 0) * before.get("num_processes", 1) != config.batch_size * num_processes:
        changed.append("batch_size (global: batch_size x processes)")
    if changed:
        raise ConfigError(
            f"--resume with settings that differ from the checkpoint's run: {changed}; "
            "use the same settings or a new --output-dir"
        )


def _write_run_configs(
    output_dir: Path, config: TrainConfig, prefix_config: PrefixConfig, fmt: TaskFormat, num_processes: int
) -> None:
    """The resolved configuration, saved with every run (train_config.json is what --resume checks)."""
    train = {**config.to_dict(), "num_processes": num_processes}
    resolved = {"train": train, "adapter": prefix_config.to_dict(), "task": fmt.to_dict()}
    atomic_write_text(output_dir / "train_config.json", json.dumps(train, indent=2))
    atomic_write_text(output_dir / "run_config.json", json.dumps(resolved, indent=2))


def _prepare(config: TrainConfig, prefix_config: PrefixConfig, model: Any, tokenizer: Any):
    """The model with its new adapter, the data, the encoded training set and the objective of a run:
    `(prefix_model, tokenizer, data, train_set, objective)`."""
    if is_encoder_run(config, model):
        data = load_task_data(config, tokenizer)  # first: its labels size the head
        head_for(data.fmt)  # refuses completion and chat data on an encoder
        model, tokenizer = load_base(config, model, tokenizer, data.fmt)
        prefix_config = resolve_init(prefix_config, data.train, data.fmt, decoder_only=False)
        pm = attach_new_adapter(config, prefix_config, model, tokenizer)
        train_set, objective = _encode_for_head(data, tokenizer, config)
    else:
        model, tokenizer = load_base(config, model, tokenizer)
        data = load_task_data(config, tokenizer)  # before the adapter: its init may be the task's text
        decoder_only = not is_encoder_decoder(model)
        prefix_config = resolve_init(prefix_config, data.train, data.fmt, decoder_only=decoder_only)
        pm = attach_new_adapter(config, prefix_config, model, tokenizer)
        skips = data.skips if config.skip_invalid else None
        train_set, objective = encode_train_set(pm.base_model, data, tokenizer, config.max_length, skips)
    return pm, tokenizer, data, train_set, objective


def run_training(
    config: TrainConfig,
    prefix_config: PrefixConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    on_progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train an adapter as configured and save everything under `config.output_dir`.

    Args:
        config: the run. prefix_config: the adapter (method, m, init, ...).
        model, tokenizer: an already loaded base model to use instead of loading `config.model`.
        on_progress: called after every optimizer step (`train.progress`); the CLI draws its bar with it.

    Returns:
        `TrainResult` with paths and the loop's summary.

    Raises:
        ConfigError, DataError: bad settings or data, raised before any training starts.
    """
    torch.manual_seed(config.seed)
    output_dir = Path(config.output_dir)
    accelerator = make_accelerator(config)
    if config.resume:
        _check_resume(output_dir, config, accelerator.num_processes)
    pm, tokenizer, data, train_set, objective = _prepare(config, prefix_config, model, tokenizer)
    prefix_config = pm.adapter_config(config.adapter_name)  # as built: init resolved, as the adapter records
    pm.to(accelerator.device)
    if data.skips.count:
        logger.warning("%s", data.skips.summary())
    output_dir.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        for stale in remove_stale_temporaries(output_dir):  # a crashed run's half-written adapter/checkpoint
            logger.info("removed %s, left by an interrupted write", stale)
    metrics_path = output_dir / "metrics.jsonl"
    trainer = Trainer(
        pm, tokenizer, train_set, data.validation, data.fmt, config, None, output_dir, accelerator, objective
    )
    if config.resume:
        trainer.resume()
    if accelerator.is_main_process:  # every file of the run is written once, by rank 0
        # On resume, lines logged after the checkpoint's step are dropped: the file reads as one clean run.
        trainer.metric_logger = JsonlMetricLogger(
            metrics_path, truncate_after=trainer.state.step if config.resume else None
        )
        _write_run_configs(output_dir, config, prefix_config, data.fmt, accelerator.num_processes)
    try:
        loop = trainer.run(on_progress)
    finally:
        if trainer.metric_logger is not None:
            trainer.metric_logger.close()
    curve = None
    if accelerator.is_main_process:
        curve = plot_curves(read_metrics(metrics_path), output_dir / "curve.png", loop.metric, config.data)
    total = sum(p.numel() for p in pm.base_model.parameters())
    return TrainResult(
        output_dir=output_dir,
        adapter_dir=output_dir / "adapter",
        curve_path=curve,
        metrics_path=metrics_path,
        loop=loop,
        trainable_parameters=pm.num_trainable_parameters(config.adapter_name),
        total_parameters=total,
        trainable_parts=pm.trainable_parts(config.adapter_name),
        num_train_examples=len(train_set),
        skipped=data.skips.summary(),
        is_main_process=accelerator.is_main_process,
    )
