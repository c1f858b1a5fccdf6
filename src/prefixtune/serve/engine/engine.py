"""`AsyncEngine`: the `Engine` protocol on top of `EngineCore` (asyncio side; owns tokenizer and registry).

`submit` validates everything it can before queueing (adapter, context length, queue room), so HTTP can
answer 4xx before streaming starts. Outputs come back from the engine thread through per-request asyncio
queues. Adapter compiles go to the engine thread through `EngineCalls`, which the registry was built with
(`run_compile=calls.run`), so they cannot race a forward pass.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from torch import nn

from prefixtune.core import max_positions, read_geometry
from prefixtune.serve.engine.calls import EngineCalls
from prefixtune.serve.engine.core import EngineCore
from prefixtune.serve.engine.generative import GenerativeEngineMethods
from prefixtune.serve.engine.kv_store import SlotKVStore
from prefixtune.serve.engine.lifecycle import drain_then_stop
from prefixtune.serve.engine.limits import EngineLimits
from prefixtune.serve.engine.messages import (
    EngineStats,
    GenerationOutput,
    GenerationRequest,
)
from prefixtune.serve.engine.registry_methods import RegistryMethods
from prefixtune.serve.engine.request import Sequence as EngineSequence
from prefixtune.serve.engine.request_checks import check_request
from prefixtune.serve.engine.runner import ModelRunner
from prefixtune.serve.engine.scheduler import Scheduler
from prefixtune.serve.engine.text_codec import TextCodec, TextCodecMethods
from prefixtune.serve.errors import EngineShutdownError
from prefixtune.serve.metrics import ServeMetrics
from prefixtune.serve.registry import AdapterRegistry

logger = logging.getLogger(__name__)


class RequestStream:
    """The `OutputStream` of one request: iterate outputs until the one with a finish reason."""

    def __init__(self, engine: AsyncEngine, request_id: str, queue: asyncio.Queue[GenerationOutput]) -> None:
        self.engine, self.request_id, self.queue = engine, request_id, queue
        self.is_finished = False

    def __aiter__(self) -> AsyncIterator[GenerationOutput]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[GenerationOutput]:
        try:
            while not self.is_finished:
                out = await self.queue.get()
                self.is_finished = out.finish_reason is not None
                yield out
        finally:
            await self.cancel()

    async def cancel(self) -> None:
        """Abort the request if it is still running (frees its slot); idempotent."""
        if not self.is_finished:
            self.is_finished = True
            self.engine._abort(self.request_id)
        self.engine._queues.pop(self.request_id, None)


class AsyncEngine(TextCodecMethods, RegistryMethods, GenerativeEngineMethods):
    """One base model, many adapters, continuous batching (implements `serve.engine.protocol.Engine`).

    Args:
        model: the frozen transformers causal LM (eval mode).
        tokenizer: its tokenizer.
        registry: the adapter registry, built with `run_compile=calls.run`.
        limits: batching and context limits.
        metrics: shared with the registry and HTTP layer.
        model_name: the base model's name in the API (`model` field; no adapter).
        calls: the engine thread's inbox, shared with the registry (its compiles run between steps).
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
    ) -> None:
        self.limits, self.tokenizer, self.registry, self.metrics = limits, tokenizer, registry, metrics
        self._model_name = model_name
        self._max_len = _context_limit(model, limits.max_model_len)
        slots = limits.scheduler.max_num_seqs
        weight = model.get_input_embeddings().weight
        self._vocab_size = int(weight.shape[0])
        store = SlotKVStore(
            slots, read_geometry(model).kv_shapes, self._max_len, device=weight.device, dtype=weight.dtype
        )
        self.core = EngineCore(
            Scheduler(limits.scheduler),
            ModelRunner(model, store),
            decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
            eos_token_ids=_eos_ids(model, tokenizer),
            max_len=self._max_len,
            emit=self._emit,
            metrics=metrics,
            calls=calls,
        )
        self.codec = TextCodec(tokenizer)  # tokenizing, templating, decoding: shared with the vLLM engine
        self._queues: dict[str, asyncio.Queue[GenerationOutput]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.is_accepting = False
        logger.info(
            "engine ready: %d slots of %d tokens (%.1f MiB KV)",
            slots,
            self._max_len,
            store.nbytes / 2**20,
        )

    # ----- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.core.start()
        self.is_accepting = True

    async def shutdown(self, drain_timeout: float = 30.0) -> None:
        """Stop accepting, let running requests finish (up to `drain_timeout` s), then stop the thread."""
        self.is_accepting = False
        await drain_then_stop(self.core, drain_timeout)

    # ----- Engine protocol --------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def max_model_len(self) -> int:
        return self._max_len

    async def submit(self, request: GenerationRequest) -> RequestStream:
        if not self.is_accepting:
            raise EngineShutdownError("the server is shutting down and accepts no new requests")
        prefix, m = None, 0
        if request.adapter_name is not None:
            prefix = await self.registry.acquire(request.adapter_name)
            m = prefix.num_virtual_tokens
        check_request(request, num_virtual_tokens=m, vocab_size=self._vocab_size, max_len=self._max_len)
        request_id = request.request_id or uuid.uuid4().hex
        seq = EngineSequence(
            request_id, list(request.prompt_token_ids), request.sampling, request.adapter_name, prefix, m
        )
        queue: asyncio.Queue[GenerationOutput] = asyncio.Queue()
        self._queues[request_id] = queue
        try:
            self.core.add(seq)
        except BaseException:
            self._queues.pop(request_id, None)
            raise
        return RequestStream(self, request_id, queue)

    def stats(self) -> EngineStats:
        with self.core.lock:
            s = self.core.scheduler
            accepting = self.is_accepting and self.core.is_alive
            return EngineStats(len(s.running), len(s.waiting), s.num_free_slots, accepting)

    # ----- internals --------------------------------------------------------------------------------
    def _emit(self, output: GenerationOutput) -> None:
        """Called on the engine thread; hands the output to the request's queue on the event loop."""
        queue = self._queues.get(output.request_id)
        if queue is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(queue.put_nowait, output)

    def _abort(self, request_id: str) -> None:
        self.core.abort(request_id)


DEFAULT_MAX_MODEL_LEN = 2048  # every slot preallocates this many positions per layer: keep the default modest


def _context_limit(model: nn.Module, configured: int | None) -> int:
    """min(the model's position limit, the configured limit or DEFAULT_MAX_MODEL_LEN)."""
    own = max_positions(model) or DEFAULT_MAX_MODEL_LEN
    return min(own, configured or DEFAULT_MAX_MODEL_LEN)


def _eos_ids(model: nn.Module, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (
        getattr(tokenizer, "eos_token_id", None),
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
    ):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list | tuple):
            ids.update(int(i) for i in source)
    return frozenset(ids)
