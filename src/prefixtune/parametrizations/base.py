"""The `Parametrization` base: everything one method is and does, in one class.

A parametrization owns its parameters (an `nn.Module`, so `.to()` and optimizers work), knows how to compile
them through the frozen model, and how to save itself without training-only parts (the reparametrization MLP
is folded into the tensors it produces). Its class also answers, from the saved tensors alone, what the rest
of the package asks about a method: which tensors it stores and their shapes, its per-layer view (`inspect`,
`doctor`), its own health checks, how it maps to Hugging Face PEFT (or why it does not), what it trains and
where that enters the model, and its literal reference forward. Shared code asks these questions; it never
branches on a method's name. Must not depend on io/, train/ or serve/.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, NamedTuple, Protocol

import torch
from torch import nn

from prefixtune.config import PrefixConfig
from prefixtune.core.geometry import ModelGeometry
from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.core.reference_seq2seq import SitePrefixes
from prefixtune.errors import ConfigError
from prefixtune.parametrizations.peft_types import PREFIX_TUNING, PROMPT_TUNING
from prefixtune.parametrizations.task_head import TaskHead

__all__ = ["PREFIX_TUNING", "PROMPT_TUNING", "Observation", "Parametrization", "PeftTensors"]


class PeftTensors(Protocol):
    """What a read PEFT prompt-learning adapter offers a method that imports it (`io.peft_format.PeftAdapter`)."""

    @property
    def embeddings(self) -> torch.Tensor:
        """PEFT's one `prompt_embeddings` tensor, as stored."""
        ...

    def layer_kv(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """PREFIX_TUNING: per-layer (H_kv, m, D) keys and values."""
        ...


class Observation(NamedTuple):
    """A method's own diagnosis of its tensors: a `diagnostics.CODES` code, what is wrong, what to do."""

    code: str
    message: str
    hint: str


class Parametrization(nn.Module):
    """Base class of the trainable adapter forms.

    Class attributes:
        method: the registered name, as in `PrefixConfig.method` and adapter files.
        trains: what is trained, in words (`prefixtune inspect`).
        injected: where it enters the frozen model, in words (`prefixtune inspect`).
        supports_reparam: whether `reparam_hidden` (the reparametrization MLP) applies.
        peft_export_types: PEFT types it exports to exactly, the default first. Every method compiles to
            per-layer keys/values, which PEFT's PREFIX_TUNING stores as they are.
        peft_import_type: the PEFT type read as this method, or None.
        encoder_decoder_problem: None when the method runs on encoder-decoders (T5, BART), else why not.
        compiles_without_model: whether `compile` never uses the base model (its stored tensors already are
            the keys/values), so a saved adapter compiles from its files alone: `convert --to peft` and
            `export-kv` then need no base model.
        default_learning_rate: the trainer's peak learning rate for this method when none is given (without
            the reparametrization MLP, which has its own default).
    """

    method: ClassVar[str]
    trains: ClassVar[str] = "?"
    injected: ClassVar[str] = "?"
    supports_reparam: ClassVar[bool] = True
    peft_export_types: ClassVar[tuple[str, ...]] = (PREFIX_TUNING,)
    peft_import_type: ClassVar[str | None] = None
    compiles_without_model: ClassVar[bool] = False
    encoder_decoder_problem: ClassVar[str | None] = None  # why the method cannot run on T5/BART, if it cannot
    default_learning_rate: ClassVar[float] = 5e-3

    def __init__(self, config: PrefixConfig, geometry: ModelGeometry) -> None:
        super().__init__()
        self.config = config
        self.geometry = geometry
        # The adapter's own task head (`config.train_head`), set by PrefixModel; a submodule, so it trains
        # and moves with the adapter.
        self.task_head: TaskHead | None = None

    def head_params(self) -> dict[str, torch.Tensor] | None:
        """The adapter's task-head weights by their names in the model (a mean-pooling head's: `MEAN_HEAD_NAMES`),
        or None (the model's own head)."""
        return None if self.task_head is None else self.task_head.params()

    # ----- building, compiling, saving --------------------------------------------------------------------
    @classmethod
    def create(
        cls, config: PrefixConfig, model: nn.Module, geometry: ModelGeometry, tokenizer: object | None
    ) -> Parametrization:
        """A new, initialized instance (see `config.init`)."""
        raise NotImplementedError

    def compile(self, model: nn.Module, fingerprint: dict | None = None) -> PrefixKV:
        """Per-layer keys/values of this adapter on the frozen `model`; differentiable."""
        raise NotImplementedError

    def folded_state(self) -> dict[str, torch.Tensor]:
        """The tensors to save: the effective parameters, reparametrization folded away."""
        raise NotImplementedError

    @classmethod
    def expected_shapes(cls, config: PrefixConfig, geometry: ModelGeometry) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every tensor `folded_state` returns (checked when loading)."""
        raise NotImplementedError

    @classmethod
    def from_folded(
        cls, config: PrefixConfig, geometry: ModelGeometry, tensors: dict[str, torch.Tensor]
    ) -> Parametrization:
        """Rebuild from saved folded tensors (trained directly from then on; no reparametrization)."""
        raise NotImplementedError

    @classmethod
    def config_problems(cls, config: PrefixConfig) -> list[str]:
        """What is wrong with `config` for this method (gathered into `PrefixConfig`'s one ConfigError)."""
        if config.reparam_hidden is not None and not cls.supports_reparam:
            return [f"reparam_hidden does not apply to method {cls.method!r}, which trains its tensors directly"]
        return []

    # ----- the saved tensors, read without a model (inspect, doctor) ------------------------------------
    @classmethod
    def tensor_ranks(cls) -> dict[str, int] | None:
        """Name -> number of dimensions of each stored tensor, when the names do not depend on the model;
        None when they do (then `layout_problem` is overridden)."""
        return None

    @classmethod
    def layout_problem(cls, tensors: dict[str, torch.Tensor]) -> str | None:
        """Why `tensors` cannot be this method's stored tensors (names, number of dimensions), or None."""
        ranks = cls.tensor_ranks()
        if ranks is None:
            raise NotImplementedError(f"{cls.__name__} must define tensor_ranks() or layout_problem()")
        if set(tensors) == set(ranks) and all(tensors[n].ndim == r for n, r in ranks.items()):
            return None
        return "stores " + ", ".join(f"one {r}-D tensor {n!r}" for n, r in ranks.items())

    @classmethod
    def layer_views(cls, tensors: dict[str, torch.Tensor]) -> list[torch.Tensor] | None:
        """Each layer's trained numbers, flattened (per-layer norms, shared/zero-layer checks); None for a
        method that trains nothing per layer."""
        return None

    @classmethod
    def width_problem(cls, tensors: dict[str, torch.Tensor], geometry: ModelGeometry) -> str | None:
        """Why the stored vectors do not have the model's width (hidden size, key/value heads), or None."""
        return None

    @classmethod
    def diagnose(cls, tensors: dict[str, torch.Tensor], model: nn.Module) -> list[Observation]:
        """Method-specific findings on tensors whose shapes fit `model` (default: none)."""
        return []

    # ----- Hugging Face PEFT ------------------------------------------------------------------------------
    @classmethod
    def peft_export_problem(cls, peft_type: str) -> str | None:
        """Why this method cannot be exported exactly as `peft_type`, or None."""
        if peft_type in cls.peft_export_types:
            return None
        if peft_type == PROMPT_TUNING:
            return (
                f"a {cls.method!r} adapter acts on every layer, which PROMPT_TUNING (one soft prompt at the "
                f"embeddings) cannot express; export it as {PREFIX_TUNING}"
            )
        return f"method {cls.method!r} cannot be expressed as PEFT {peft_type}; export it as {PREFIX_TUNING}"

    def peft_soft_prompt(self) -> torch.Tensor:
        """PROMPT_TUNING export: the (m, d) soft prompt (only for methods listing PROMPT_TUNING)."""
        raise ConfigError(self.peft_export_problem(PROMPT_TUNING) or f"{self.method!r} has no soft prompt")

    @classmethod
    def tensors_from_peft(cls, adapter: PeftTensors) -> dict[str, torch.Tensor]:
        """This method's stored tensors equal to a PEFT adapter of type `peft_import_type` (as stored)."""
        raise NotImplementedError(f"method {cls.method!r} imports no PEFT type")

    # ----- the executable specification -------------------------------------------------------------------
    def reference_logits(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, n, V) logits computed literally, without compiling (tests prove the fast path equal to it).

        Raises:
            ConfigError: the method has no literal reference.
        """
        raise ConfigError(f"method {self.method!r} has no literal reference path")

    def site_prefixes(self) -> SitePrefixes:
        """Encoder-decoders: the adapter's prefixes per attention site, for the literal reference path
        (`core.reference_seq2seq`).

        Raises:
            ConfigError: the method has no encoder-decoder form.
        """
        raise ConfigError(f"method {self.method!r} has no encoder-decoder reference path")

    # ----- shared helpers ---------------------------------------------------------------------------------
    @property
    def num_virtual_tokens(self) -> int:
        return self.config.num_virtual_tokens

    def _kv(self, keys: Iterable[torch.Tensor], values: Iterable[torch.Tensor], fingerprint: dict | None) -> PrefixKV:
        return PrefixKV(
            keys=tuple(keys),
            values=tuple(values),
            method=self.method,
            position_convention=self.config.position_convention,
            fingerprint=fingerprint,
            sites=self.geometry.sites or None,
        )
