"""`VllmEngine`: the server's `Engine` protocol on vLLM's `AsyncLLM`, with prefix adapters via the connector.

One job: what `serve/engine/engine.py` is for the built-in engine, with vLLM doing scheduling, batching,
paged KV cache, prefix caching and parallelism. The registry (names, keys, LRU, validation) and the HTTP
layer are the built-in engine's; only the compiled form differs (a KV pack in `kv_root`, see `compiler`).
`submit` validates before queueing, so HTTP answers 4xx before streaming starts.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from prefixtune.errors import EngineBusyError
from prefixtune.serve.engine.generative import GenerativeEngineMethods
from prefixtune.serve.engine.messages import EngineStats, GenerationOutput, GenerationRequest
from prefixtune.serve.engine.registry_methods import RegistryMethods
from prefixtune.serve.engine.request_checks import check_request
from prefixtune.serve.engine.text_codec import TextCodec, TextCodecMethods
from prefixtune.serve.errors import EngineShutdownError, InvalidRequestError
from prefixtune.serve.metrics import ServeMetrics
from prefixtune.serve.registry import AdapterRegistry
from prefixtune.vllm.compiler import VllmAdapter
from prefixtune.vllm.engine_config import VllmEngineConfig
from prefixtune.vllm.requests import OutputTranslator, vllm_prompt, vllm_sampling

logger = logging.getLogger(__name__)


class VllmRequestStream:
    """The `OutputStream` of one request on vLLM (iterate; `cancel` aborts it in vLLM, idempotent)."""

    def __init__(self, engine: VllmEngine, request_id: str, collector: Any, translator: OutputTranslator) -> None:
        self.engine, self.request_id, self.collector, self.translator = engine, request_id, collector, translator
        self.is_finished = False

    def __aiter__(self) -> AsyncIterator[GenerationOutput]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[GenerationOutput]:
        try:
            while not self.is_finished:
                output = self.collector.get_nowait() or await self.collector.get()
                translated = self.translator.translate(output)
                self.is_finished = translated.finish_reason is not None or bool(output.finished)
                yield translated
        finally:
            await self.cancel()

    async def cancel(self) -> None:
        if not self.is_finished:
            self.is_finished = True
            await self.engine.llm.abort(self.request_id)
        self.collector.close()
        self.engine._active.discard(self.request_id)


class VllmEngine(TextCodecMethods, RegistryMethods, GenerativeEngineMethods):
    """One base model on vLLM, many prefix adapters (implements `serve.engine.protocol.Engine`).

    Args:
        tokenizer: the base model's tokenizer (the same files vLLM loads).
        registry: the adapter registry, built with a `VllmAdapterCompiler`.
        config: the vLLM engine options.
        metrics: shared with the registry and HTTP layer.
    """

    def __init__(self, tokenizer: Any, registry: AdapterRegistry, config: VllmEngineConfig, metrics: ServeMetrics):
        self.config, self.registry, self.metrics = config, registry, metrics
        self.codec = TextCodec(tokenizer)
        self._vocab_size = 0  # the model's (may exceed the tokenizer's), known once vLLM has started
        self.llm: Any = None
        self._active: set[str] = set()
        self.is_accepting = False

    # ----- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start vLLM's engine processes (tens of seconds on a CPU) and accept requests."""
        from vllm.config import KVTransferConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.metrics.prometheus import get_prometheus_registry

        kwargs = self.config.engine_args()
        kwargs["kv_transfer_config"] = KVTransferConfig(**kwargs["kv_transfer_config"])
        args = AsyncEngineArgs(**kwargs)
        self.llm = AsyncLLM.from_engine_args(args)
        self._vocab_size = int(self.llm.model_config.get_vocab_size())
        # vLLM's own gauges (running/waiting requests, batch, preemptions, prefix-cache hits) on our /metrics;
        # the built-in engine's step metrics (prefixtune_batch_size, ...) are not filled by this engine.
        self.metrics.add_registry(get_prometheus_registry())
        self.is_accepting = True
        logger.info("vLLM engine ready: %s, context %d", self.config.model, self.max_model_len)

    async def shutdown(self, drain_timeout: float = 30.0) -> None:
        """Stop accepting; running streams were drained by the HTTP server; stop vLLM's processes."""
        self.is_accepting = False
        if self.llm is not None:
            self.llm.shutdown()

    # ----- Engine protocol --------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.config.served_model_name

    @property
    def max_model_len(self) -> int:
        if self.llm is not None:
            return int(self.llm.model_config.max_model_len)
        return self.config.limits.max_model_len or 0

    async def submit(self, request: GenerationRequest) -> VllmRequestStream:
        if not self.is_accepting or self.llm is None:
            raise EngineShutdownError("the server is shutting down and accepts no new requests")
        adapter: VllmAdapter | None = None
        if request.adapter_name is not None:
            adapter = await self.registry.acquire(request.adapter_name)
        self._validate(request, adapter)
        limits = self.config.limits.scheduler
        if len(self._active) >= limits.max_num_seqs + limits.max_waiting:
            raise EngineBusyError(
                f"{len(self._active)} requests are already running or waiting (limit "
                f"{limits.max_num_seqs + limits.max_waiting}); retry later"
            )
        from vllm.exceptions import VLLMClientError

        request_id = request.request_id or uuid.uuid4().hex
        prompt, params = vllm_prompt(request.prompt_token_ids, adapter), vllm_sampling(request.sampling, adapter)
        try:
            collector = await self.llm.add_request(request_id, prompt, params)
        except VLLMClientError as exc:  # vLLM's own validation: the request's fault
            raise InvalidRequestError(f"vLLM refused the request: {exc}") from None
        self._active.add(request_id)
        translator = OutputTranslator(request_id, len(request.prompt_token_ids), request.sampling)
        return VllmRequestStream(self, request_id, collector, translator)

    def stats(self) -> EngineStats:
        """vLLM keeps its queue to itself: running = min(in flight, max_num_seqs), the rest waiting."""
        active, limit = len(self._active), self.config.limits.scheduler.max_num_seqs
        accepting = self.is_accepting and self.llm is not None and not self.llm.errored
        return EngineStats(min(active, limit), max(0, active - limit), max(0, limit - active), accepting)

    # ----- internals --------------------------------------------------------------------------------
    def _validate(self, request: GenerationRequest, adapter: VllmAdapter | None) -> None:
        """The built-in engine's checks, plus what this engine cannot serve."""
        m = adapter.num_virtual_tokens if adapter is not None else 0
        check_request(request, num_virtual_tokens=m, vocab_size=self._vocab_size, max_len=self.max_model_len)
        if adapter is not None and request.sampling.prompt_logprobs is not None:
            # vLLM computes a request with prompt logprobs from scratch, placeholders included, which would
            # give wrong numbers: refuse rather than return them.
            raise InvalidRequestError(
                "prompt logprobs (echo with logprobs) are not available for adapters on the vLLM engine; "
                "use the built-in engine (--engine prefixtune) or leave out echo/prompt logprobs"
            )
