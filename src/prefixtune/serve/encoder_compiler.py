"""`EncoderAdapterCompiler`: adapter directory -> `CompiledClassifier` (prefix, own head, labels) for an encoder.

One job: what the classify engine needs of an adapter, read and validated once at load (and again after an
LRU eviction): the compiled `PrefixKV` (through `PrefixAdapterCompiler`, the same validation and fingerprint
rules as the generative engine), the adapter's own task head (`train_head`, head.safetensors; a copy of the
model's head or a mean-pooling one, `head_pooling`) and the label
names (the adapter's task format, written by `prefixtune train`, else the model's `id2label`). An adapter that
cannot classify (a token tagger) still loads; `CompiledClassifier.problem` says why, and a classify request
for it is a 400. Depends on torch, io and parametrizations; runs on the engine thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from prefixtune.core.prefix_kv import PrefixKV
from prefixtune.io.peft_import import read_adapter_files
from prefixtune.parametrizations.task_head import TaskHead
from prefixtune.serve.compiler import PrefixAdapterCompiler
from prefixtune.serve.registry import AdapterSpec


@dataclass(frozen=True, slots=True)
class CompiledClassifier:
    """An adapter ready to classify (what the registry caches for an encoder).

    Attributes:
        prefix_kv: the compiled per-layer keys/values (detached, on the model's device).
        head: the adapter's own head (None: the model's).
        labels: class names in id order (empty: unknown).
        problem: why this adapter cannot classify, as "it ..." (None: it can).
    """

    prefix_kv: PrefixKV
    head: TaskHead | None
    labels: tuple[str, ...]
    problem: str | None = None

    @property
    def nbytes(self) -> int:
        head = 0 if self.head is None else sum(p.numel() * p.element_size() for p in self.head.parameters())
        return self.prefix_kv.nbytes + head

    @property
    def num_virtual_tokens(self) -> int:
        return self.prefix_kv.num_virtual_tokens


def model_labels(model: nn.Module) -> tuple[str, ...]:
    """The model config's label names in id order (`id2label`)."""
    config = model.config
    id2label = getattr(config, "id2label", None) or {}
    return tuple(str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(int(config.num_labels)))


class EncoderAdapterCompiler:
    """Adapter directory -> `CompiledClassifier` for one frozen encoder with a sequence-classification head.

    Args:
        model: the served encoder (`...ForSequenceClassification`, eval mode).
        allow_unverified: serve adapters that record no base-model fingerprint.
        has_trained_head: whether the model's own head is trained (False: a head newly initialized at load,
            so only adapters with their own head classify).
    """

    def __init__(self, model: nn.Module, *, allow_unverified: bool = False, has_trained_head: bool = True) -> None:
        self.prefixes = PrefixAdapterCompiler(model, allow_unverified=allow_unverified)
        self.labels = model_labels(model)
        self.has_trained_head = has_trained_head

    def inspect(self, path: Path) -> AdapterSpec:
        """Validate without compiling. Raises AdapterFormatError, IncompatibleBaseModelError."""
        return self.prefixes.inspect(path)

    def compile(self, path: Path) -> CompiledClassifier:
        """Compile the prefix, and read the head and labels (validated by the prefix compiler's checks)."""
        kv = self.prefixes.compile(path)
        files = read_adapter_files(path)
        head = None
        if files.head is not None:
            weights = {n: t.to(device=self.prefixes.device) for n, t in files.head.items()}
            head = TaskHead(weights, pooling=files.config.head_pooling).requires_grad_(False)
        task = files.metadata.get("task") if isinstance(files.metadata, dict) else None
        task = task if isinstance(task, dict) else {}
        saved = tuple(str(x) for x in task.get("labels") or ())
        labels = saved if task.get("kind") == "classification" and len(saved) == len(self.labels) else self.labels
        return CompiledClassifier(kv, head, labels, self._problem(task.get("kind"), head))

    def _problem(self, kind: object, head: TaskHead | None) -> str | None:
        if kind is not None and kind != "classification":
            return f"it was trained for {kind!r}, not sequence classification"
        if head is None and not self.has_trained_head:
            return (
                "it has no classification head of its own (train it with train_head) and the base model's is untrained"
            )
        return None
