"""`PrefixModel`: a frozen transformers model with named prefix adapters, and `attach` / `load_adapter`.

The user-facing object. It owns the adapters (parametrizations), compiles them, and sends every forward and
`generate` through the one injection mechanism (`core.inject`). It holds no attention code of its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from prefixtune.adapter_dict import AdapterDict
from prefixtune.adapter_files import AdapterFilesMixin
from prefixtune.config import ADAPTER_NAME_RULE, PrefixConfig, is_valid_adapter_name
from prefixtune.core import (
    disable_checkpointing,
    enable_checkpointing,
    has_bidirectional_attention,
    read_geometry,
    uninstall_attention,
)
from prefixtune.core.fingerprint import fingerprint
from prefixtune.core.geometry import ModelGeometry
from prefixtune.core.inject import ensure_installed, prefix_forward
from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.encoder_forward import encoder_forward
from prefixtune.errors import AdapterNotFoundError, ConfigError, UnsupportedModelError
from prefixtune.generation.generate import generate_with_prefixes
from prefixtune.model_checks import config_for_model, head_names_for, model_config_problems
from prefixtune.parametrizations import build_parametrization, parametrization_class
from prefixtune.parametrizations.base import Parametrization
from prefixtune.parametrizations.task_head import TaskHead

logger = logging.getLogger(__name__)

DEFAULT_ADAPTER = "default"


class PrefixModel(AdapterFilesMixin, nn.Module):
    """A frozen base model plus named adapters; forward and generate mix adapters per batch row.

    Args:
        base_model: a transformers causal LM, or an encoder of the BERT family (`AutoModel`,
            `...ForSequenceClassification`, `...ForTokenClassification`; docs/encoders.md). Its weights are
            frozen (requires_grad=False) and never changed.
        tokenizer: optional; needed for init='text'.
    """

    def __init__(self, base_model: nn.Module, tokenizer: Any | None = None) -> None:
        super().__init__()
        # What attaching changes, so that `detach` can give the model back as it was.
        self._requires_grad = {name: p.requires_grad for name, p in base_model.named_parameters()}
        self._is_detached = False
        base_model.requires_grad_(False)
        try:
            ensure_installed(base_model)
            self.geometry: ModelGeometry = read_geometry(base_model)
        except UnsupportedModelError:  # give the model back as it came (a refused family, e.g. DeBERTa-v2)
            uninstall_attention(base_model)
            for name, p in base_model.named_parameters():
                p.requires_grad_(self._requires_grad[name])
            raise
        self.base_model = base_model
        self.tokenizer = tokenizer
        self.adapters = AdapterDict()  # names may hold "." (the one adapter-name rule)
        self._metadata: dict[str, dict[str, Any]] = {}
        self._fingerprint: dict[str, Any] | None = None
        self.active_adapter: str | None = None
        # Inside `compile_once`: adapter name -> (compiled prefix in the graph, its detached copy used by forwards)
        self._compiled_once: dict[str, tuple[PrefixKV, PrefixKV]] | None = None

    # ----- adapters -------------------------------------------------------------------------------------
    @property
    def adapter_names(self) -> list[str]:
        return list(self.adapters.keys())

    @property
    def config(self) -> Any:
        """The base model's transformers config, read by Hugging Face Trainer and TRL as from a PeftModel."""
        return self.base_model.config

    def add_adapter(self, name: str, config: PrefixConfig) -> Parametrization:
        """Create a new, initialized adapter `name` (made active if it is the first)."""
        self._check_new_name(name)
        config = config_for_model(self.base_model, config)
        self._check_config(config)
        device = self.base_model.get_input_embeddings().weight.device
        with torch.no_grad():
            adapter = build_parametrization(config, self.base_model, self.adapter_geometry(config), self.tokenizer)
            if config.train_head and config.head_pooling == "mean":  # a fresh linear head on mean-pooled states
                config_hf = self.base_model.config
                adapter.task_head = TaskHead.mean_pooling(config_hf.hidden_size, config_hf.num_labels, config.seed)
            elif config.train_head:  # P-tuning v2: the adapter trains its own copy of the model's head
                adapter.task_head = TaskHead.copy_of(self.base_model, head_names_for(self.base_model))
        self._insert(name, adapter.to(device), {})
        return adapter

    def remove_adapter(self, name: str) -> None:
        """Forget adapter `name`."""
        self._adapter(name)
        del self.adapters[name]
        self._metadata.pop(name, None)
        if self.active_adapter == name:
            self.active_adapter = self.adapter_names[0] if self.adapter_names else None

    def set_adapter(self, name: str) -> None:
        """Make `name` the adapter used by rows that do not name one."""
        self._adapter(name)
        self.active_adapter = name

    def adapter_config(self, name: str | None = None) -> PrefixConfig:
        return self._adapter(name).config

    def get_adapter(self, name: str | None = None) -> Parametrization:
        """The parametrization of adapter `name` (default: active); ask it about its method.

        Raises:
            AdapterNotFoundError: no such adapter.
        """
        return self._adapter(name)

    def adapter_metadata(self, name: str | None = None) -> dict[str, Any]:
        """Free-form metadata saved with the adapter (train/ stores the task format here)."""
        return dict(self._metadata.get(self._resolve(name), {}))

    def set_adapter_metadata(self, name: str | None, metadata: dict[str, Any]) -> None:
        self._metadata[self._resolve(name)] = dict(metadata)

    def trainable_parameters(self, name: str | None = None) -> list[nn.Parameter]:
        """What trains for adapter `name` (default: active): its prefix parameters, then its own task head's
        (`PrefixConfig.train_head`). The base model has none."""
        return [p for p in self._adapter(name).parameters() if p.requires_grad]

    def trainable_parts(self, name: str | None = None) -> dict[str, int]:
        """Trainable parameter counts of adapter `name` by part: {"prefix": ..., "head": ...} ("head" only
        for an adapter with its own task head)."""
        adapter = self._adapter(name)
        head = {id(p) for p in adapter.task_head.parameters()} if adapter.task_head is not None else set()
        parts = {"prefix": sum(p.numel() for p in adapter.parameters() if p.requires_grad and id(p) not in head)}
        if adapter.task_head is not None:
            parts["head"] = adapter.task_head.num_parameters()
        return parts

    def num_trainable_parameters(self, name: str | None = None) -> int:
        return sum(p.numel() for p in self.trainable_parameters(name))

    def prefix_states(self, name: str | None = None) -> torch.Tensor:
        """Method "prefix": the effective hidden-state prefixes P^l, (L, m, d)."""
        adapter = self._adapter(name)
        if not isinstance(adapter, parametrization_class("prefix")):
            raise ConfigError(f"prefix_states is for method 'prefix'; adapter {name!r} is {adapter.method!r}")
        return adapter.states()

    def compile(self, name: str | None = None) -> PrefixKV:
        """Adapter `name` as per-layer keys/values (differentiable when gradients are enabled)."""
        self._check_attached()
        return self._adapter(name).compile(self.base_model, self.base_fingerprint())

    def detach(self) -> nn.Module:
        """Give the base model back exactly as it was before `attach`, and return it.

        Undoes everything attaching changed: the attention implementation of every (sub)config, prefixtune's
        attributes on attention modules, and each parameter's `requires_grad`. (Compiling adds hooks only for
        the duration of a compile.) The model's outputs then equal those of a never-attached twin bit for
        bit. This PrefixModel cannot run afterwards; the adapters stay readable (save them first if needed).
        """
        if not self._is_detached:
            uninstall_attention(self.base_model)
            for name, p in self.base_model.named_parameters():
                p.requires_grad_(self._requires_grad.get(name, p.requires_grad))
            self._is_detached = True
        return self.base_model

    def base_fingerprint(self) -> dict[str, Any]:
        """The fingerprint of the base model (computed once; the base never changes)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.base_model)
        return self._fingerprint

    # ----- running --------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        adapter_names: Sequence[str | None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """The base model's forward with each row's adapter (`adapter_names[r]`; None = bare model).

        On an encoder with a task head, each row goes through its adapter's own head when the adapter has
        one (`train_head`), so `.logits` of a batch mixing adapters are every row's own classification.

        Returns:
            transformers' output: `.logits` ((B, T, V) for a causal LM; (B, C) or (B, T, C) for an encoder's
            head), `.loss` when `labels` are given.
        """
        self._check_attached()
        ref = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
        kvs = self.prefix_kvs_for(adapter_names, ref.shape[0])
        if has_bidirectional_attention(self.base_model) and input_ids is not None:
            heads = self._heads_for(adapter_names, ref.shape[0])
            return encoder_forward(
                self.base_model,
                input_ids,
                prefix_kvs=kvs,
                heads=heads,
                attention_mask=attention_mask,
                labels=labels,
                **kwargs,
            )
        return prefix_forward(
            self.base_model, input_ids, prefix_kvs=kvs, attention_mask=attention_mask, labels=labels, **kwargs
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        adapter_names: Sequence[str | None] | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """transformers' `generate` (greedy, sampling, beams) with each row's adapter; left-pad prompts.

        Returns:
            (B * num_return_sequences, T + new) token ids.

        Raises:
            UnsupportedModelError: the base model does not generate (an encoder: classify with `forward`).
        """
        self._check_attached()
        if not hasattr(self.base_model, "generate"):
            raise UnsupportedModelError(
                f"{type(self.base_model).__name__} does not generate text (an encoder classifies or tags); "
                "use the model's forward (`prefixtune eval`, or /v1/classify when serving)"
            )
        kvs = [None if kv is None else kv.detach() for kv in self.prefix_kvs_for(adapter_names, input_ids.shape[0])]
        return generate_with_prefixes(self.base_model, input_ids, attention_mask, kvs, **generate_kwargs)

    def prefix_kvs_for(self, adapter_names: Sequence[str | None] | None, batch_size: int) -> list[PrefixKV | None]:
        """One compiled prefix per row; each distinct adapter is compiled once per call."""
        if adapter_names is None:
            adapter_names = [self.active_adapter] * batch_size
        if len(adapter_names) != batch_size:
            raise ConfigError(f"adapter_names has {len(adapter_names)} entries for a batch of {batch_size} rows")
        compiled = {name: self._compiled(name) for name in dict.fromkeys(adapter_names) if name is not None}
        return [None if name is None else compiled[name] for name in adapter_names]

    def _heads_for(self, adapter_names: Sequence[str | None] | None, batch_size: int) -> list[TaskHead | None]:
        """Each row's own task head (None: the model's), as `prefix_kvs_for` resolves the rows' adapters."""
        if adapter_names is None:
            adapter_names = [self.active_adapter] * batch_size
        return [None if name is None else self._adapter(name).task_head for name in adapter_names]

    @contextmanager
    def compile_once(self) -> Iterator[None]:
        """Compile each adapter once for every forward and backward pass inside (gradient accumulation).

        Compiling runs the frozen layers over the prefix at batch 1 for every forward; with k micro-batches per
        optimizer step that is paid k times. Inside this block, forwards that need gradients share one
        compiled prefix per adapter, cut from the graph, whose gradients accumulate over the backward passes;
        leaving the block without an error runs one backward through the compile into the adapter parameters.
        The gradients equal compiling per pass (up to float rounding), except that dropout inside the frozen
        model, if any, draws one mask for the whole block. On an error, nothing reaches the parameters.

        Example:
            with pm.compile_once():
                for batch in micro_batches:
                    (pm(**batch).loss / len(micro_batches)).backward()
            optimizer.step()
        """
        if self._compiled_once is not None:
            raise RuntimeError("compile_once blocks do not nest")
        self._compiled_once = {}
        try:
            yield
        except BaseException:
            self._compiled_once = None
            raise
        shared, self._compiled_once = self._compiled_once, None
        outputs, grads = [], []
        for in_graph, used in shared.values():
            for out, leaf in zip(in_graph.tensors(), used.tensors(), strict=True):
                if leaf.grad is not None:
                    outputs.append(out)
                    grads.append(leaf.grad)
        if outputs:
            torch.autograd.backward(outputs, grads)

    def _compiled(self, name: str) -> PrefixKV:
        """`compile(name)`, or inside `compile_once` the block's shared copy when gradients are recorded."""
        if self._compiled_once is None or not torch.is_grad_enabled():
            return self.compile(name)
        key = self._resolve(name)
        if key not in self._compiled_once:
            in_graph = self.compile(key)
            if not in_graph.tensors()[0].requires_grad:  # nothing to carry back (e.g. a frozen adapter)
                return in_graph
            used = in_graph.detach()
            for t in used.tensors():
                t.requires_grad_(True)
            self._compiled_once[key] = (in_graph, used)
        return self._compiled_once[key][1]

    def gradient_checkpointing_enable(self) -> None:
        """Recompute layer activations in backward. Non-reentrant, so gradients reach the prefixes."""
        enable_checkpointing(self.base_model)

    def gradient_checkpointing_disable(self) -> None:
        disable_checkpointing(self.base_model)

    def adapter_geometry(self, config: PrefixConfig) -> ModelGeometry:
        """The shapes an adapter with `config` has on this model: an encoder-decoder's slots of the sites it
        uses (`config.sites`, default all three), or every layer of a decoder-only model.

        Raises:
            ConfigError: `sites` given for a decoder-only model.
        """
        if config.sites is not None and not self.geometry.sites:
            raise ConfigError(
                f"sites={list(config.sites)} applies to encoder-decoder models (T5, BART); "
                f"{type(self.base_model).__name__} is decoder-only: leave sites unset"
            )
        return self.geometry.select(config.sites)

    # ----- internals ------------------------------------------------------------------------------------
    def _check_attached(self) -> None:
        if self._is_detached:
            raise RuntimeError("this PrefixModel was detached from its base model; attach the model again to run it")

    def _insert(self, name: str, adapter: Parametrization, metadata: dict[str, Any]) -> None:
        self.adapters[name] = adapter
        self._metadata[name] = dict(metadata)
        if self.active_adapter is None:
            self.active_adapter = name

    def _resolve(self, name: str | None) -> str:
        resolved = name if name is not None else self.active_adapter
        if resolved is None:
            raise AdapterNotFoundError("no adapter is attached; add one with add_adapter() or load_adapter()")
        return resolved

    def _adapter(self, name: str | None = None) -> Parametrization:
        resolved = self._resolve(name)
        if resolved not in self.adapters:
            raise AdapterNotFoundError(f"no adapter named {resolved!r}; attached: {self.adapter_names or 'none'}")
        return self.adapters[resolved]

    def _check_config(self, config: PrefixConfig, where: str = "") -> None:
        """Refuse a configuration this base model cannot run (position convention, task head)."""
        problems = model_config_problems(self.base_model, config)
        if problems:
            raise ConfigError([where + p for p in problems], source="PrefixConfig for this model")

    def _check_new_name(self, name: str) -> None:
        if not is_valid_adapter_name(name):
            raise ConfigError(f"adapter name {name!r} is invalid: {ADAPTER_NAME_RULE}")
        if name in self.adapters:
            raise ConfigError(f"an adapter named {name!r} is already attached; remove_adapter() it first")


def attach(
    model: nn.Module,
    config: PrefixConfig | None = None,
    *,
    adapter_name: str = DEFAULT_ADAPTER,
    tokenizer: Any = None,
) -> PrefixModel:
    """Freeze `model` and attach a new adapter to it.

    Args:
        model: a transformers causal LM (attention 'sdpa' or 'eager').
        config: the adapter; default `PrefixConfig()` (method "kv", m=16, init "vocab": no training data here).
        adapter_name: its name.
        tokenizer: needed for init='text'.
    """
    pm = PrefixModel(model, tokenizer=tokenizer)
    pm.add_adapter(adapter_name, config or PrefixConfig())
    return pm


def load_adapter(
    model: nn.Module | PrefixModel,
    path: str | os.PathLike,
    *,
    adapter_name: str = DEFAULT_ADAPTER,
    check_fingerprint: bool = True,
    tokenizer: Any = None,
) -> PrefixModel:
    """Load an adapter directory (ours or PEFT's) onto a base model (or add it to an existing PrefixModel)."""
    pm = model if isinstance(model, PrefixModel) else PrefixModel(model, tokenizer=tokenizer)
    pm.load_adapter(path, adapter_name, check_fingerprint=check_fingerprint)
    return pm


def reference_forward(
    pm: PrefixModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    adapter_name: str | None = None,
) -> torch.Tensor:
    """Logits (B, n, V) of adapter `adapter_name` computed by the method's literal reference path.

    The executable specification of DESIGN.md §1: tests prove the fast path equal to it.

    Raises:
        ConfigError: the adapter's method has no literal reference.
    """
    with torch.no_grad():
        return pm._adapter(adapter_name).reference_logits(pm.base_model, input_ids, attention_mask)
