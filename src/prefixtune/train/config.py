"""`TrainConfig`: everything a training run needs besides the adapter's own `PrefixConfig`.

One job: the fields, their defaults with the reason beside them, and validation that lists every problem at
once. Help strings are reused verbatim by `prefixtune train` flags, so a flag and a field are one thing.
Depends on `prefixtune.errors` only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from prefixtune.errors import ConfigError

SCHEDULES: tuple[str, ...] = ("linear", "cosine", "constant")
PRECISIONS: tuple[str, ...] = ("auto", "no", "bf16", "fp16")

# Li & Liang (2021) and P-tuning v2 train direct prefixes with 5e-3..1e-2 (P-tuning v2 up to 6e-2); through
# the reparametrization MLP the gradients are much larger, and 5e-5..1e-4 is the range that trains stably.
# Each method may set its own direct rate (`Parametrization.default_learning_rate`; `prefix` 3e-2, `kv` 1e-2:
# the rates the quality suite's validation picked, bench/RESULTS-quality-suite.md).
DEFAULT_LR_DIRECT = 5e-3
DEFAULT_LR_REPARAM = 1e-4


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """A training run: data, optimization, evaluation and checkpointing."""

    model: str = _f(
        "smollm2-135m",
        "Base model: a built-in name (smollm2-135m; the encoder all-minilm-l6-v2), an HF directory or a .gguf file. "
        "An encoder (BERT, RoBERTa, ModernBERT) trains a task head on classification or token_classification data.",
    )
    data: str = _f("", "Training data: a JSONL file or a built-in dataset (rotten-tomatoes).")
    eval_data: str | None = _f(
        None, "Validation data (JSONL). Default: the built-in dataset's validation split, or none."
    )
    output_dir: str = _f("runs/prefixtune", "Run directory: adapter/, checkpoint/, metrics.jsonl, curve.png.")
    task: str | None = _f(
        None,
        "Task format: classification, completion, chat or token_classification ({tokens, tags}, encoders). "
        "Default: detected from the first record.",
    )
    template: str | None = _f(None, "Classification prompt with {text}, e.g. 'Review: {text}\\nSentiment:'.")
    verbalizer: dict[str, str] | None = field(
        default=None,
        metadata={"help": "Classification label -> target word(s), e.g. positive=' great'. Default: ' ' + label."},
    )
    max_length: int = _f(256, "Longest example in tokens; longer ones are an error (or skipped).")
    skip_invalid: bool = _f(False, "Skip (and count) invalid or over-long records instead of stopping.")
    train_limit: int | None = _f(None, "Use only the first N training records.")
    eval_limit: int | None = _f(200, "Evaluate on the first N validation records (None: all).")
    learning_rate: float | None = _f(
        None,
        f"Peak learning rate. Default: the method's own for direct training (prefix 3e-2, kv 1e-2, prompt "
        f"{DEFAULT_LR_DIRECT:g}; literature: 5e-3..6e-2) and {DEFAULT_LR_REPARAM:g} with the reparametrization "
        "MLP (literature: 5e-5..1e-4).",
    )
    weight_decay: float = _f(0.0, "AdamW weight decay on the adapter parameters.")
    batch_size: int = _f(8, "Examples per micro-batch (per process).")
    grad_accum: int = _f(1, "Micro-batches accumulated into one optimizer step.")
    max_steps: int = _f(200, "Optimizer steps to train.")
    warmup_steps: int | None = _f(None, "Linear warmup steps. Default: 6% of max_steps.")
    schedule: str = _f("linear", "Decay after warmup: linear, cosine or constant.")
    max_grad_norm: float | None = _f(1.0, "Clip the adapter gradient norm to this (None: no clipping).")
    eval_every: int = _f(50, "Evaluate (and checkpoint) every N optimizer steps; 0: only at the end.")
    eval_base: bool = _f(True, "Evaluate the bare model first, so every run reports its gain.")
    eval_batch_size: int = _f(32, "Rows per forward pass during evaluation.")
    log_every: int = _f(10, "Write training loss to metrics.jsonl every N steps.")
    seed: int = _f(0, "Seed for data order, initialization and dropout (deterministic on CPU).")
    mixed_precision: str = _f("auto", "auto (bf16 where the GPU supports it, else fp32), no, bf16 or fp16.")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass to save memory.")
    resume: bool = _f(False, "Resume exactly from output_dir/checkpoint (same config required).")
    progress: bool = _f(True, "Show a progress bar on stderr.")
    adapter_name: str = _f("default", "Name of the adapter inside the model and in saved files.")

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems, source="TrainConfig")

    def problems(self) -> list[str]:
        """Every problem with this configuration (empty when valid)."""
        out = []
        if not self.data:
            out.append("data is required: a JSONL file or a built-in dataset name (rotten-tomatoes)")
        for name in ("batch_size", "grad_accum", "max_steps", "max_length", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                out.append(f"{name}={getattr(self, name)!r} must be >= 1")
        if self.eval_every < 0:
            out.append(f"eval_every={self.eval_every} must be >= 0")
        if self.learning_rate is not None and self.learning_rate <= 0:
            out.append(f"learning_rate={self.learning_rate} must be > 0")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps <= self.max_steps:
            out.append(f"warmup_steps={self.warmup_steps} must be within 0..max_steps ({self.max_steps})")
        if self.schedule not in SCHEDULES:
            out.append(f"schedule={self.schedule!r} is unknown; choose one of {', '.join(SCHEDULES)}")
        if self.mixed_precision not in PRECISIONS:
            out.append(f"mixed_precision={self.mixed_precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            out.append(f"max_grad_norm={self.max_grad_norm} must be > 0 or None")
        return out

    def resolved_learning_rate(self, has_reparam: bool, method_default: float = DEFAULT_LR_DIRECT) -> float:
        """The learning rate to use: the given one, else the MLP's default, else the method's own
        (`method_default`, `Parametrization.default_learning_rate`)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return DEFAULT_LR_REPARAM if has_reparam else method_default

    def resolved_warmup_steps(self) -> int:
        """Warmup steps: the given number, else 6% of max_steps."""
        return self.warmup_steps if self.warmup_steps is not None else round(0.06 * self.max_steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (saved as train_config.json with every run)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Field name -> help string, for CLI flags."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
