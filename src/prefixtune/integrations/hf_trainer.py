"""Training a `PrefixModel` inside Hugging Face `Trainer` (and TRL's `SFTTrainer`) the way a `PeftModel` trains.

One job: the few places where `transformers.Trainer` assumes a `PreTrainedModel` or `PeftModel` and would do
the wrong thing with a `PrefixModel` (issue 13):
- saving: `Trainer._save` writes a non-`PreTrainedModel`'s whole state dict, base weights included; here
  `save_model` (and every checkpoint) writes a prefixtune adapter directory (`adapter_config.json` +
  `adapter.safetensors`, reparametrization folded away) plus the adapter's unfolded trainable state
  (`prefix_trainable.safetensors`), which is what resuming needs;
- resuming and `load_best_model_at_end`: the trainable state is copied back into the same parameters, so the
  optimizer state that Trainer restores still points at them;
- gradient (activation) checkpointing: Trainer calls the model's hook with Hugging Face's arguments, which
  change between transformers releases; the mixin enables prefixtune's own non-reentrant checkpointing
  instead and clears the flag in its copy of the arguments.
The optimizer needs nothing: the base model is frozen, so Trainer's `requires_grad` filter leaves only the
prefix parameters. The loss needs nothing: `PrefixModel.forward` passes `num_items_in_batch` on to the base
model's loss, as Trainer expects. Depends on transformers and prefixtune's public model API; `trl` only in
`prefix_sft_trainer_class`.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import Trainer

from prefixtune.errors import AdapterFormatError, CheckpointError
from prefixtune.io.tensor_file import read_safetensors
from prefixtune.prefix_model import PrefixModel

logger = logging.getLogger(__name__)

TRAINABLE_FILE = "prefix_trainable.safetensors"
CHECKPOINTING_FLAGS = ("activation_checkpointing", "gradient_checkpointing")  # the new name, then the old alias


def _without_checkpointing_flags(args: Any) -> tuple[Any, bool]:
    """A copy of the TrainingArguments with checkpointing off, and whether it was on."""
    if args is None or not any(getattr(args, flag, False) for flag in CHECKPOINTING_FLAGS):
        return args, False
    args = copy.copy(args)
    for flag in CHECKPOINTING_FLAGS:
        if hasattr(args, flag):
            setattr(args, flag, False)
    return args, True


def save_prefix_checkpoint(model: PrefixModel, output_dir: str | os.PathLike, adapter_name: str | None) -> None:
    """Write the adapter directory files and the unfolded trainable state into `output_dir`.

    `output_dir` may hold other files (Trainer's `checkpoint-N/`, tokenizer, arguments), so the adapter is
    built in a temporary directory beside them and its files are moved in one by one (each `os.replace`
    is atomic), never replacing the directory itself.
    """
    target = Path(output_dir)
    target.mkdir(parents=True, exist_ok=True)
    scratch = target / ".prefixtune-adapter"
    try:
        model.save_adapter(scratch, adapter_name)
        for file in scratch.iterdir():
            os.replace(file, target / file.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    adapter = model.adapters[_name(model, adapter_name)]
    state = {k: v.detach().cpu().contiguous() for k, v in adapter.state_dict().items()}
    save_file(state, str(target / TRAINABLE_FILE), metadata={"format": "pt"})


def load_prefix_checkpoint(model: PrefixModel, checkpoint_dir: str | os.PathLike, adapter_name: str | None) -> None:
    """Copy the trainable state saved by `save_prefix_checkpoint` back into the adapter's parameters in place.

    Raises:
        CheckpointError: the directory has no prefixtune trainable state, or it does not fit the adapter.
    """
    path = Path(checkpoint_dir) / TRAINABLE_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{checkpoint_dir} has no {TRAINABLE_FILE}; it was not written by a prefixtune Trainer. Resume from a "
            "checkpoint-N directory of the same run, or start without resume_from_checkpoint"
        )
    adapter = model.adapters[_name(model, adapter_name)]
    try:
        state, _ = read_safetensors(path)
    except AdapterFormatError as exc:
        raise CheckpointError(f"{exc}; resume from another checkpoint-N directory of the run") from None
    try:
        adapter.load_state_dict(state, strict=True)  # copies into the same Parameter objects
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path} does not fit adapter {_name(model, adapter_name)!r} ({exc}); resume with the same adapter "
            "configuration"
        ) from None


def _name(model: PrefixModel, adapter_name: str | None) -> str:
    name = adapter_name or model.active_adapter
    if name is None or name not in model.adapters:
        raise CheckpointError(f"adapter {adapter_name!r} is not attached; attached: {model.adapter_names}")
    return name


class PrefixTrainerMixin:
    """Mixed in before a `transformers.Trainer` subclass to train a `PrefixModel` (see the module docstring).

    Args:
        model: the `PrefixModel`; its active adapter is the one trained and saved (or `prefix_adapter_name`).
        args: the TrainingArguments; `activation_checkpointing` / `gradient_checkpointing` turn on prefixtune's
            checkpointing.
        prefix_adapter_name: which adapter to save and resume (default: the active one).
        *rest, **kwargs: whatever the Trainer class takes.
    """

    def __init__(
        self, model: PrefixModel, args: Any = None, *rest: Any, prefix_adapter_name: str | None = None, **kwargs: Any
    ) -> None:
        if not isinstance(model, PrefixModel):
            raise TypeError(f"{type(self).__name__} trains a prefixtune PrefixModel, got {type(model).__name__}")
        args, is_checkpointing = _without_checkpointing_flags(args)
        if is_checkpointing:
            model.gradient_checkpointing_enable()
        self.prefix_adapter_name = prefix_adapter_name
        super().__init__(model, args, *rest, **kwargs)  # type: ignore[call-arg]

    def _prefix_model(self) -> PrefixModel:
        return self.accelerator.unwrap_model(self.model)  # type: ignore[attr-defined]

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Write the adapter (never the base weights) and the tokenizer into `output_dir`, on the main process."""
        args = self.args  # type: ignore[attr-defined]
        if not args.should_save:
            return
        output_dir = output_dir if output_dir is not None else args.output_dir
        logger.info("saving prefix adapter to %s", output_dir)
        save_prefix_checkpoint(self._prefix_model(), output_dir, self.prefix_adapter_name)
        if self.processing_class is not None:  # type: ignore[attr-defined]
            self.processing_class.save_pretrained(output_dir)  # type: ignore[attr-defined]
        torch.save(args, os.path.join(output_dir, "training_args.bin"))  # what Trainer writes beside a model

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        load_prefix_checkpoint(self._prefix_model(), resume_from_checkpoint, self.prefix_adapter_name)

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint  # type: ignore[attr-defined]
        logger.info("loading the best prefix adapter from %s", best)
        load_prefix_checkpoint(self._prefix_model(), best, self.prefix_adapter_name)


class PrefixTrainer(PrefixTrainerMixin, Trainer):
    """`transformers.Trainer` for a `PrefixModel`: trains the prefix only, saves and resumes the adapter.

    Example:
        pm = prefixtune.attach(model, PrefixConfig(num_virtual_tokens=16), tokenizer=tokenizer)
        trainer = PrefixTrainer(pm, TrainingArguments("out"), train_dataset=ds, data_collator=collator)
        trainer.train()
        trainer.save_model("out/adapter")       # a prefixtune adapter directory
        prefixtune.load_adapter(model, "out/adapter")
    """


def prefix_sft_trainer_class() -> type:
    """TRL's `SFTTrainer` for a `PrefixModel` (built on first use, so prefixtune does not need `trl`).

    Beyond the mixin: TRL reads `generation_config` and calls `add_model_tags` on the model, which are
    given as the base model's own; and it patches the model's forward with a fused LM head that runs
    `model.base_model` as the backbone, which on a `PrefixModel` is the whole causal LM. That patch is moved
    onto the base causal LM, where `base_model` is the backbone and the prefix still reaches attention
    (`PrefixModel.forward` passes `fused_lm_head` on). Tested with trl 1.16.

    Raises:
        ImportError: trl is not installed (`pip install trl`).
    """
    global _SFT_TRAINER
    if _SFT_TRAINER is None:
        from trl import SFTTrainer
        from trl.trainer.utils import add_fused_lm_head

        def __init__(self, model: PrefixModel, args: Any = None, *rest: Any, **kwargs: Any) -> None:
            base = model.base_model
            model.__dict__.update(generation_config=base.generation_config, add_model_tags=base.add_model_tags)
            PrefixTrainerMixin.__init__(self, model, args, *rest, **kwargs)
            if model.__dict__.pop("forward", None) is not None:  # TRL's patch of the PrefixModel's forward
                add_fused_lm_head(base, outputs=FUSED_OUTPUTS)

        _SFT_TRAINER = type(
            "PrefixSFTTrainer",
            (PrefixTrainerMixin, SFTTrainer),
            {"__init__": __init__, "__doc__": PrefixTrainer.__doc__},
        )
    return _SFT_TRAINER


FUSED_OUTPUTS = ("log_probs", "entropy", "is_top1")  # what SFTTrainer asks of its fused head (its metrics)
_SFT_TRAINER: type | None = None
