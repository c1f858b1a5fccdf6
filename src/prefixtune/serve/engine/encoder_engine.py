"""`EncoderEngine`: the `Engine` protocol for an encoder base model: classification, no generation (issue 12).

One job: the asyncio side of an encoder server. `classify` resolves the adapter (the registry's LRU of
`CompiledClassifier`s, compiled on the engine thread), checks every input before queueing (empty, too long,
outside the vocabulary, an adapter or model that cannot classify: 4xx before anything runs), queues the rows
on the `ClassifyBatcher` thread and awaits their results; a cancelled request drops its rows that have not run.
Completions and chat are refused with `EncoderModelError` (a 400 naming /v1/classify).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

from torch import nn

from prefixtune.core import max_positions, position_offset
from prefixtune.serve.encoder_compiler import CompiledClassifier, model_labels
from prefixtune.serve.engine.calls import EngineCalls
from prefixtune.serve.engine.classify_batcher import ClassifyBatcher, ClassifyRow
from prefixtune.serve.engine.lifecycle import drain_then_stop
from prefixtune.serve.engine.limits import EngineLimits
from prefixtune.serve.engine.messages import (
    Classification,
    ClassifyRequest,
    EngineStats,
    GenerationRequest,
)
from prefixtune.serve.engine.protocol import OutputStream
from prefixtune.serve.engine.registry_methods import RegistryMethods
from prefixtune.serve.engine.text_codec import TextCodec, TextCodecMethods
from prefixtune.serve.errors import (
    ContextLengthError,
    EncoderModelError,
    EngineShutdownError,
    InvalidRequestError,
    NotAClassifierError,
)
from prefixtune.serve.metrics import ServeMetrics
from prefixtune.serve.registry import AdapterRegistry

logger = logging.getLogger(__name__)

DEFAULT_MAX_MODEL_LEN = 512  # BERT's position table, when the config states none


class EncoderEngine(TextCodecMethods, RegistryMethods):
    """One encoder with a sequence-classification head, many adapters, mixed batches (implements `Engine`).

    Args:
        model: the frozen encoder (`...ForSequenceClassification`, eval mode).
        tokenizer: its tokenizer.
        registry: the adapter registry (an `EncoderAdapterCompiler`, built with `run_compile=calls.run`).
        limits: rows and padded tokens per batch, queue length, context.
        metrics: shared with the registry and HTTP layer.
        model_name: the base model's name in the API (`model` field; no adapter).
        calls: the engine thread's inbox, shared with the registry.
        has_trained_head: whether the model's own head is trained (False: the bare model does not classify).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        registry: AdapterRegistry,
        limits: EngineLimits,
        metrics: ServeMetrics,
        *,
        model_name: str,
        calls: EngineCalls,
        has_trained_head: bool = True,
    ) -> None:
        self.registry, self.metrics, self._model_name = registry, metrics, model_name
        self.has_trained_head = has_trained_head
        self.labels = model_labels(model)
        # RoBERTa numbers real tokens from padding_idx + 1: its table has that many positions fewer to give.
        positions = (max_positions(model) or DEFAULT_MAX_MODEL_LEN) - position_offset(model)
        self._max_len = min(positions, limits.max_model_len or positions)
        self._vocab_size = int(model.get_input_embeddings().weight.shape[0])
        pad = getattr(tokenizer, "pad_token_id", None)
        scheduler = limits.scheduler
        self.batcher = ClassifyBatcher(
            model,
            pad_token_id=int(pad) if pad is not None else 0,
            max_rows=scheduler.max_num_seqs,
            max_tokens=scheduler.max_num_batched_tokens,
            max_waiting=scheduler.max_waiting,
            metrics=metrics,
            calls=calls,
        )
        self.codec = TextCodec(tokenizer)
        self.is_accepting = False
        logger.info("encoder engine ready: %d labels, inputs of up to %d tokens", len(self.labels), self._max_len)

    # ----- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        self.batcher.start()
        self.is_accepting = True

    async def shutdown(self, drain_timeout: float = 30.0) -> None:
        """Stop accepting, let queued rows run (up to `drain_timeout` s), then stop the thread."""
        self.is_accepting = False
        await drain_then_stop(self.batcher, drain_timeout)

    # ----- Engine protocol --------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def max_model_len(self) -> int:
        return self._max_len

    async def submit(self, request: GenerationRequest) -> OutputStream:
        raise EncoderModelError(
            f"the model {self._model_name!r} is an encoder and does not generate text; use /v1/classify"
        )

    async def classify(self, request: ClassifyRequest) -> list[Classification]:
        if not self.is_accepting:
            raise EngineShutdownError("the server is shutting down and accepts no new requests")
        classifier = await self._classifier(request.adapter_name)
        labels = self.labels if classifier is None else classifier.labels
        self._check(request, classifier)
        rows = [
            ClassifyRow(tuple(ids), request.adapter_name, classifier, labels, concurrent.futures.Future())
            for ids in request.inputs
        ]
        self.batcher.add(rows)
        waits = [asyncio.wrap_future(row.future) for row in rows]
        try:
            return list(await asyncio.gather(*waits))
        finally:
            for row in rows:  # a cancelled request (timeout, client gone): rows not yet run are skipped
                row.future.cancel()

    def stats(self) -> EngineStats:
        running = self.batcher.num_running
        accepting = self.is_accepting and self.batcher.is_alive
        free = max(self.batcher.max_rows - running, 0)
        return EngineStats(running, self.batcher.num_waiting, free, accepting)

    # ----- internals --------------------------------------------------------------------------------
    async def _classifier(self, adapter_name: str | None) -> CompiledClassifier | None:
        """The adapter's compiled classifier (None: the bare model). Raises NotAClassifierError."""
        if adapter_name is None:
            if not self.has_trained_head:
                raise NotAClassifierError(
                    f"the base model {self._model_name!r} has no trained classification head (it was loaded without "
                    "one); classify with an adapter that trains its own head (train_head)"
                )
            return None
        classifier = await self.registry.acquire(adapter_name)
        assert isinstance(classifier, CompiledClassifier), "an encoder's registry compiles CompiledClassifiers"
        if classifier.problem is not None:
            raise NotAClassifierError(f"adapter {adapter_name!r} cannot classify: {classifier.problem}")
        return classifier

    def _check(self, request: ClassifyRequest, classifier: CompiledClassifier | None) -> None:
        """Raise InvalidRequestError / ContextLengthError for an input no batch can run."""
        if not request.inputs:
            raise InvalidRequestError("input is empty; send a string or a non-empty list of strings")
        shifted = classifier is not None and classifier.prefix_kv.position_convention == "shifted"
        m = classifier.num_virtual_tokens if shifted else 0
        for i, ids in enumerate(request.inputs):
            if not ids:
                raise InvalidRequestError(f"input {i} is empty; send at least one token")
            bad = [t for t in ids if not 0 <= t < self._vocab_size]
            if bad:
                raise InvalidRequestError(f"input {i}: token ids {bad[:5]} are outside the vocabulary")
            if len(ids) + m > self._max_len:
                prefix = f", {m} of them taken by this adapter's prefix (position convention 'shifted')" if m else ""
                raise ContextLengthError(
                    f"input {i} is {len(ids)} tokens; this model takes at most {self._max_len} positions{prefix}. "
                    "Shorten the input."
                )
