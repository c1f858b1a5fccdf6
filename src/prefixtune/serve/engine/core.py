"""`EngineCore`: the engine's own thread, running scheduler steps on the model (no asyncio here).

Each iteration: run queued calls (`EngineCalls`: adapter compiles use the model, so they run here, between steps),
apply aborts, plan a step, run it, then turn sampled tokens into outputs (detokenize, stop strings, EOS,
max_tokens). The scheduler is touched only under `lock`, so other threads may `add` requests; everything
else crosses threads through `call` / `abort` and the `emit` callback.

Logprobs follow tokens, not text: every generated token's output carries its logprobs, also when its text is
held back (an incomplete character, a possible stop string) or cut (the token that completes a stop string
is the last one reported, as OpenAI and vLLM do). Prompt logprobs gathered over prefill chunks go out with
the request's first output.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from prefixtune.serve.engine.calls import EngineCalls
from prefixtune.serve.engine.detokenizer import IncrementalDetokenizer
from prefixtune.serve.engine.messages import FinishReason, GenerationOutput, TokenLogprobs
from prefixtune.serve.engine.request import Sequence
from prefixtune.serve.engine.runner import ModelRunner
from prefixtune.serve.engine.scheduler import Scheduler
from prefixtune.serve.metrics import ServeMetrics

logger = logging.getLogger(__name__)

Emit = Callable[[GenerationOutput], None]


class EngineCore:
    """Owns the scheduler and runner; `start` launches the loop thread.

    Args:
        scheduler: the pure-Python scheduler.
        runner: runs steps on the model.
        decode: token ids -> text (special tokens skipped).
        eos_token_ids: tokens that end generation (unless `ignore_eos`).
        max_len: tokens a KV slot holds.
        emit: called (on this thread) with every output.
        metrics: step and token metrics.
        calls: the calls to run between steps (shared with the registry; default: an own, empty inbox).
    """

    def __init__(
        self,
        scheduler: Scheduler,
        runner: ModelRunner,
        *,
        decode: Callable[[list[int]], str],
        eos_token_ids: frozenset[int],
        max_len: int,
        emit: Emit,
        metrics: ServeMetrics,
        calls: EngineCalls | None = None,
    ) -> None:
        self.scheduler, self.runner = scheduler, runner
        self.decode, self.eos_token_ids, self.max_len = decode, eos_token_ids, max_len
        self.emit, self.metrics = emit, metrics
        self.calls = calls or EngineCalls()
        self.lock = threading.Lock()
        self._wake = self.calls.wake  # one event: a queued call, a request, an abort or stop wakes the loop
        self._stop = threading.Event()
        self._aborts: deque[str] = deque()
        self._thread = threading.Thread(target=self._loop, name="prefixtune-engine", daemon=True)

    # ----- called from other threads ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def add(self, seq: Sequence) -> None:
        """Queue a request (raises EngineBusyError when the queue is full)."""
        seq.state.detokenizer = IncrementalDetokenizer(self.decode, seq.sampling.stop)
        with self.lock:
            self.scheduler.add(seq)
            self.metrics.queue_depth.set(len(self.scheduler.waiting))
        self._wake.set()

    def abort(self, request_id: str) -> None:
        self._aborts.append(request_id)
        self._wake.set()

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def has_work(self) -> bool:
        with self.lock:
            return self.scheduler.has_work

    # ----- the loop ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._iterate()
            except Exception:  # a bug or device failure must not kill the engine: fail what was running
                logger.exception("engine step failed; aborting the running requests")
                self._abort_all(waiting=False)
        self._abort_all(waiting=True)

    def _iterate(self) -> None:
        self.calls.run_pending()
        self._apply_aborts()
        with self.lock:
            plan = self.scheduler.schedule()
            self.metrics.queue_depth.set(len(self.scheduler.waiting))
            self.metrics.running.set(len(self.scheduler.running))
        if plan.is_empty:
            self._wake.wait(0.05)
            self._wake.clear()
            return
        step = self.runner.execute(plan)
        self.metrics.observe_step(len(plan.chunks), len({c.seq.adapter_name for c in plan.chunks}))
        self.metrics.prompt_tokens.inc(sum(c.num_tokens for c in plan.prefills))
        with self.lock:
            for request_id in step.failed:  # aborted alone; the rest of the batch goes on
                seq = self.scheduler.abort(request_id)
                if seq is not None:
                    self._emit_final(seq, "", (), "abort")
            self.scheduler.update(plan, step.sampled)
            for chunk in plan.chunks:
                request_id = chunk.seq.request_id
                if request_id in step.prompt_logprobs:
                    state = chunk.seq.state
                    state.prompt_logprobs = [*(state.prompt_logprobs or ()), *step.prompt_logprobs[request_id]]
                if request_id in step.sampled:
                    self._process_token(chunk.seq, step.sampled[request_id], step.logprobs.get(request_id))

    def _abort_all(self, *, waiting: bool) -> None:
        with self.lock:
            seqs = list(self.scheduler.running) + (list(self.scheduler.waiting) if waiting else [])
            for seq in seqs:
                self.scheduler.abort(seq.request_id)
                self._emit_final(seq, "", (), "abort")

    def _process_token(self, seq: Sequence, token: int, logprobs: TokenLogprobs | None) -> None:
        now = time.monotonic()
        state = seq.state
        last = state.last_token_time
        if last is None:
            self.metrics.time_to_first_token.observe(now - seq.arrival_time)
        else:
            self.metrics.inter_token_latency.observe(now - last)
        state.last_token_time = now
        self.metrics.generation_tokens.inc()
        detok = state.detokenizer
        assert detok is not None, "add() gives every request its detokenizer"
        params = seq.sampling
        reason: FinishReason | None = None
        if token in self.eos_token_ids and not params.ignore_eos:
            text, reason = detok.flush(), "stop"
        else:
            text = detok.add(token)
            if detok.is_stopped:
                reason = "stop"
            elif len(seq.output_token_ids) >= params.max_tokens or seq.num_tokens >= self.max_len:
                text, reason = text + detok.flush(), "length"
        found = (logprobs,) if logprobs is not None else ()
        if reason is None:
            self._send(seq, text, (token,), None, found)
        else:
            self.scheduler.finish(seq, reason)
            self._emit_final(seq, text, (token,), reason, found)

    def _emit_final(
        self,
        seq: Sequence,
        text: str,
        tokens: tuple[int, ...],
        reason: FinishReason,
        logprobs: tuple[TokenLogprobs, ...] = (),
    ) -> None:
        seq.finish_reason = reason
        self._send(seq, text, tokens, reason, logprobs)

    def _send(
        self,
        seq: Sequence,
        text: str,
        tokens: tuple[int, ...],
        reason: FinishReason | None,
        logprobs: tuple[TokenLogprobs, ...] = (),
    ) -> None:
        prompt, seq.state.prompt_logprobs = seq.state.prompt_logprobs, None  # gathered over prefill: first output only
        self.emit(
            GenerationOutput(
                request_id=seq.request_id,
                text=text,
                token_ids=tokens,
                finish_reason=reason,
                num_prompt_tokens=seq.num_prompt_tokens,
                num_generated_tokens=len(seq.output_token_ids),
                logprobs=logprobs if seq.sampling.logprobs is not None else None,
                prompt_logprobs=(None, *prompt) if prompt is not None else None,
            )
        )

    def _apply_aborts(self) -> None:
        while self._aborts:
            request_id = self._aborts.popleft()
            with self.lock:
                seq = self.scheduler.abort(request_id)
                if seq is not None:
                    self._emit_final(seq, "", (), "abort")
