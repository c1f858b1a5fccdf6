"""The PEFT baseline for the serving benchmark (issue 4): an `Engine` that serves prefix adapters the only
way Hugging Face PEFT can.

PEFT holds one active prompt-learning adapter per model, so requests are grouped per adapter: the oldest
waiting request picks the adapter, up to `max_batch` waiting requests of that adapter form a static batch,
and the batch runs to completion before the next group starts (no continuous batching across adapters).
The prefix enters as PEFT does it: the first forward goes through `PeftModel` (which builds the prefix
`past_key_values`), later steps feed the grown cache back to the base model, exactly what PEFT's
`prepare_inputs_for_generation` would do (its `generate` drops the prefix on transformers 5.x, DESIGN.md §5,
so the loop is written out). Greedy only; prompts in a batch must have one length (the benchmark's are).

It plugs into the same HTTP layer (`prefixtune.serve.api.app.build_app`), so the comparison isolates the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import torch

from prefixtune.errors import AdapterNotFoundError, EngineBusyError
from prefixtune.serve.engine.messages import (
    AdapterInfo,
    ChatTurn,
    EngineStats,
    GenerationOutput,
    GenerationRequest,
)
from prefixtune.serve.metrics import ServeMetrics


class _Stream:
    def __init__(self, queue: asyncio.Queue) -> None:
        self.queue = queue

    async def _iterate(self) -> AsyncIterator[GenerationOutput]:
        while True:
            out = await self.queue.get()
            yield out
            if out.finish_reason is not None:
                return

    def __aiter__(self) -> AsyncIterator[GenerationOutput]:
        return self._iterate()

    async def cancel(self) -> None:  # the baseline cannot leave a static batch early
        return None


class PeftBaselineEngine:
    """Grouped-per-adapter static batching over a `peft.PeftModel` with several prefix-tuning adapters."""

    def __init__(
        self,
        peft_model: Any,
        tokenizer: Any,
        model_name: str,
        adapters: dict[str, int],
        metrics: ServeMetrics,
        max_batch: int = 16,
        max_waiting: int = 1024,
    ) -> None:
        self.peft_model, self.tokenizer, self.name, self.metrics = peft_model, tokenizer, model_name, metrics
        self.adapters = adapters  # name -> m
        self.max_batch, self.max_waiting = max_batch, max_waiting
        self.waiting: deque[tuple[GenerationRequest, asyncio.Queue, float]] = deque()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopped = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.running = 0

    model_name = property(lambda self: self.name)
    max_model_len = property(lambda self: 2048)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        return [self.tokenizer.decode([t], skip_special_tokens=False) for t in token_ids]

    def render_chat(self, turns: Sequence[ChatTurn]) -> str:
        return "".join(f"{t.role}: {t.content}\n" for t in turns)

    async def submit(self, request: GenerationRequest) -> _Stream:
        if request.adapter_name is not None and request.adapter_name not in self.adapters:
            raise AdapterNotFoundError(request.adapter_name)
        queue: asyncio.Queue = asyncio.Queue()
        with self.lock:
            if len(self.waiting) >= self.max_waiting:
                raise EngineBusyError("queue full")
            self.waiting.append((request, queue, time.monotonic()))
        self.wake.set()
        return _Stream(queue)

    def list_adapters(self) -> list[AdapterInfo]:
        return [AdapterInfo(n, n, "kv", m, 0) for n, m in self.adapters.items()]

    def get_adapter(self, name: str) -> AdapterInfo:
        if name not in self.adapters:
            raise AdapterNotFoundError(name)
        return AdapterInfo(name, name, "kv", self.adapters[name], 0)

    async def load_adapter(self, name: str, path: str, api_keys: Sequence[str] = ()) -> AdapterInfo:
        raise NotImplementedError

    async def unload_adapter(self, name: str) -> None:
        raise NotImplementedError

    def stats(self) -> EngineStats:
        return EngineStats(self.running, len(self.waiting), 0, not self.stopped)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.thread.start()

    async def shutdown(self, drain_timeout: float = 30.0) -> None:
        self.stopped = True
        self.wake.set()
        await asyncio.to_thread(self.thread.join, 10)

    # ----- the engine thread ------------------------------------------------------------------------
    def _next_group(self) -> list[tuple[GenerationRequest, asyncio.Queue, float]]:
        with self.lock:
            if not self.waiting:
                return []
            adapter = self.waiting[0][0].adapter_name
            group = [w for w in self.waiting if w[0].adapter_name == adapter][: self.max_batch]
            for w in group:
                self.waiting.remove(w)
            return group

    def _run(self) -> None:
        while not self.stopped:
            group = self._next_group()
            if not group:
                self.wake.wait(0.05)
                self.wake.clear()
                continue
            self.running = len(group)
            self.metrics.observe_step(len(group), 1)
            self._generate(group)
            self.running = 0

    @torch.inference_mode()
    def _generate(self, group: list[tuple[GenerationRequest, asyncio.Queue, float]]) -> None:
        requests = [g[0] for g in group]
        adapter = requests[0].adapter_name
        ids = torch.tensor([list(r.prompt_token_ids) for r in requests])  # (B, n): one prompt length
        B, n = ids.shape
        mask = torch.ones(B, n, dtype=torch.long)
        max_tokens = max(r.sampling.max_tokens for r in requests)
        if adapter is None:
            ctx = self.peft_model.disable_adapter()
            m = 0
        else:
            self.peft_model.set_adapter(adapter)
            ctx, m = contextlib.nullcontext(), self.adapters[adapter]
        with ctx:
            out = self.peft_model(input_ids=ids, attention_mask=mask, use_cache=True)
        base = self.peft_model.get_base_model()
        cache, full_mask = out.past_key_values, torch.ones(B, m + n, dtype=torch.long)
        for step in range(max_tokens):
            tokens = out.logits[:, -1].argmax(-1)  # (B,)
            for r, (request, queue, _) in enumerate(group):
                if step < request.sampling.max_tokens:
                    done = step + 1 == request.sampling.max_tokens
                    text = self.tokenizer.decode([int(tokens[r])], skip_special_tokens=True)
                    self._emit(
                        queue,
                        GenerationOutput(
                            request.request_id, text, (int(tokens[r]),), "length" if done else None, n, step + 1
                        ),
                    )
            if step + 1 == max_tokens:
                break
            full_mask = torch.cat([full_mask, torch.ones(B, 1, dtype=torch.long)], dim=1)
            out = base(input_ids=tokens[:, None], attention_mask=full_mask, past_key_values=cache, use_cache=True)
            cache = out.past_key_values

    def _emit(self, queue: asyncio.Queue, out: GenerationOutput) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(queue.put_nowait, out)
