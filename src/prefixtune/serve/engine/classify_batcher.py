"""`ClassifyBatcher`: the encoder engine's own thread, running queued classification rows in mixed batches.

One job: the thread that owns model execution for an encoder server. Each iteration runs queued calls
(`EngineCalls`: adapter compiles use the model, so they run here, between batches), then takes the rows
waiting now (FIFO, up to `max_num_seqs` rows and `max_num_batched_tokens` padded tokens) and runs them as one
batch through `encoder_forward`: each row with its own adapter's prefix and head (issue 12, item 6), padded on
the right, so a row's probabilities do not depend on what else is in the batch. A classification is a single
forward, so there is no KV cache, no slots and no continuous batching: a micro-batcher is all it needs. Rows
arriving while a batch runs wait for the next. Results go back through `concurrent.futures.Future`s; a
cancelled future (client gone, timeout) is skipped.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections import deque
from dataclasses import dataclass

import torch
from torch import nn

from prefixtune.encoder_forward import encoder_forward
from prefixtune.errors import EngineBusyError
from prefixtune.serve.encoder_compiler import CompiledClassifier
from prefixtune.serve.engine.calls import EngineCalls
from prefixtune.serve.engine.messages import Classification
from prefixtune.serve.errors import EngineShutdownError, EngineStepError
from prefixtune.serve.metrics import ServeMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClassifyRow:
    """One input to classify: its tokens, its adapter (None: the bare model) and where the result goes."""

    token_ids: tuple[int, ...]
    adapter_name: str | None
    classifier: CompiledClassifier | None
    labels: tuple[str, ...]
    future: concurrent.futures.Future


class ClassifyBatcher:
    """Queue and thread of classification rows (see the module docstring).

    Args:
        model: the encoder with a sequence-classification head (eval mode).
        pad_token_id: the id padding goes in (masked out).
        max_rows: rows per batch at most (`--max-num-seqs`).
        max_tokens: padded tokens (rows x longest row) per batch at most (`--max-num-batched-tokens`); a row
            longer than that runs alone.
        max_waiting: rows queued at most (`add` refuses more with EngineBusyError).
        metrics: batch and token metrics.
        calls: the calls to run between batches (shared with the registry).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        pad_token_id: int,
        max_rows: int,
        max_tokens: int,
        max_waiting: int,
        metrics: ServeMetrics,
        calls: EngineCalls,
    ) -> None:
        self.model, self.pad_token_id, self.metrics, self.calls = model, pad_token_id, metrics, calls
        self.max_rows, self.max_tokens, self.max_waiting = max_rows, max_tokens, max_waiting
        self.device = model.get_input_embeddings().weight.device
        self.num_running = 0
        self._queue: deque[ClassifyRow] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="prefixtune-classify", daemon=True)

    # ----- called from other threads ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self.calls.wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def add(self, rows: list[ClassifyRow]) -> None:
        """Queue every row or none (raises EngineBusyError when they do not fit in `max_waiting`)."""
        with self._lock:
            if len(self._queue) + len(rows) > self.max_waiting:
                raise EngineBusyError(
                    f"the server's queue is full ({len(self._queue)} inputs waiting, at most {self.max_waiting}); "
                    "retry later"
                )
            self._queue.extend(rows)
            self.metrics.queue_depth.set(len(self._queue))
        self.calls.wake.set()

    @property
    def num_waiting(self) -> int:
        return len(self._queue)

    @property
    def has_work(self) -> bool:
        return bool(self._queue) or self.num_running > 0

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # ----- the loop ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            self.calls.run_pending()
            batch = self._take()
            if not batch:
                self.calls.wake.wait(0.05)
                self.calls.wake.clear()
                continue
            self._run(batch)
        with self._lock:
            left, self._queue = list(self._queue), deque()
        for row in left:
            if row.future.set_running_or_notify_cancel():
                row.future.set_exception(EngineShutdownError("the server stopped before this request ran; retry"))

    def _take(self) -> list[ClassifyRow]:
        """The next batch: FIFO rows whose futures are still wanted, within the row and token budgets."""
        batch: list[ClassifyRow] = []
        longest = 0
        with self._lock:
            while self._queue and len(batch) < self.max_rows:
                row = self._queue[0]
                width = max(longest, len(row.token_ids))
                if batch and width * (len(batch) + 1) > self.max_tokens:
                    break
                self._queue.popleft()
                if row.future.set_running_or_notify_cancel():
                    batch.append(row)
                    longest = width
            self.metrics.queue_depth.set(len(self._queue))
        return batch

    def _run(self, batch: list[ClassifyRow]) -> None:
        self.num_running = len(batch)
        self.metrics.running.set(len(batch))
        try:
            probs = self._forward(batch)
        except Exception:  # a bug or device fault must not kill the thread: fail this batch only
            logger.exception("classification batch of %d rows failed", len(batch))
            for row in batch:
                row.future.set_exception(EngineStepError("the engine failed while classifying this input; retry"))
        else:
            for row, p in zip(batch, probs, strict=True):
                best = max(range(len(p)), key=p.__getitem__)
                label = row.labels[best] if best < len(row.labels) else None
                row.future.set_result(Classification(tuple(p), label, len(row.token_ids)))
        finally:
            self.num_running = 0
            self.metrics.running.set(0)
        self.metrics.observe_step(len(batch), len({row.adapter_name for row in batch}))
        self.metrics.prompt_tokens.inc(sum(len(row.token_ids) for row in batch))

    def _forward(self, batch: list[ClassifyRow]) -> list[list[float]]:
        """Every row's class probabilities: one right-padded forward, each row with its prefix and head."""
        width = max(len(row.token_ids) for row in batch)
        ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)  # (B, n)
        mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, n)
        for r, row in enumerate(batch):
            ids[r, : len(row.token_ids)] = torch.tensor(row.token_ids)
            mask[r, : len(row.token_ids)] = 1
        with torch.no_grad():
            out = encoder_forward(
                self.model,
                ids.to(self.device),
                prefix_kvs=[None if row.classifier is None else row.classifier.prefix_kv for row in batch],
                heads=[None if row.classifier is None else row.classifier.head for row in batch],
                attention_mask=mask.to(self.device),
            )
        return out.logits.float().softmax(-1).tolist()  # (B, C)
