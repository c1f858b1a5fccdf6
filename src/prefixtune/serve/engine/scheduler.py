"""The scheduler: continuous batching over KV slots, as pure logic (no torch, no I/O).

Contract (what the runner and engine may rely on):

- Requests wait in FIFO order; `add` refuses with `EngineBusyError` when `max_waiting` are already waiting.
- Every call to `schedule` plans one engine step under a token budget (`max_num_batched_tokens`):
  1. every running request that is decoding gets its one pending token (decodes go first: a running
     request never starves);
  2. running requests still prefilling get chunks of their prompt, oldest first, while budget is left
     (chunked prefill: a long prompt is spread over several steps instead of stalling every decode);
  3. waiting requests are admitted, oldest first, while a slot is free, budget is left and the admission
     policy agrees; an admitted request gets a slot and a first prompt chunk in the same step.
- Requests join and leave only between steps. A request owns one KV slot from admission to finish.
- Slot layout: in the returned plan, decoding requests occupy slots [0, D) and prefilling chunks
  [D, D + P), so the runner addresses each group's cache as one contiguous view and never gathers the context.
  Keeping this layout costs slot copies (`moves`) only when membership changes (a request finishes or its
  prefill completes), never per step.
- `update` advances each scheduled request by its chunk and appends the sampled token of every chunk that
  reached the end of the request's known tokens. Finishing (EOS, stop, length) is the engine's decision;
  it calls `finish`, which frees the slot.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prefixtune.config_sections import flag_help
from prefixtune.errors import ConfigError, EngineBusyError
from prefixtune.serve.engine.messages import FinishReason
from prefixtune.serve.engine.request import Sequence, SequenceStatus

AdmissionPolicy = Callable[[Sequence, list[Sequence]], bool]
"""(candidate, running requests) -> whether the candidate may join the running batch now."""


def admit_all(candidate: Sequence, running: list[Sequence]) -> bool:
    """The default admission policy: any adapter mix is fine (the one injection mechanism batches them)."""
    return True


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Batching limits (the `prefixtune serve` flags of the same names; the vLLM engine passes them to vLLM).

    Attributes:
        max_num_seqs: KV slots, i.e. requests running at once (the largest batch).
        max_num_batched_tokens: tokens computed per step (decodes + prefill chunks); >= max_num_seqs.
        max_waiting: queued requests beyond which `add` refuses (HTTP 429).
    """

    max_num_seqs: int = field(default=16, metadata=flag_help("Requests running at once (KV slots, largest batch)."))
    max_num_batched_tokens: int = field(default=256, metadata=flag_help("Tokens computed per engine step."))
    max_waiting: int = field(default=256, metadata=flag_help("Queued requests before answering 429."))

    def problems(self) -> list[str]:
        out = []
        if self.max_num_seqs < 1:
            out.append(f"max_num_seqs={self.max_num_seqs} must be >= 1")
        if self.max_num_batched_tokens < max(self.max_num_seqs, 1):
            out.append(
                f"max_num_batched_tokens={self.max_num_batched_tokens} must be >= max_num_seqs="
                f"{self.max_num_seqs} so every running request can decode each step"
            )
        if self.max_waiting < 0:
            out.append(f"max_waiting={self.max_waiting} must be >= 0")
        return out


@dataclass(frozen=True, slots=True)
class ScheduledChunk:
    """`num_tokens` tokens of `seq`, starting after the `start` already computed, to run this step."""

    seq: Sequence
    start: int
    num_tokens: int

    @property
    def samples(self) -> bool:
        """Whether this chunk reaches the last known token, so its logits give the next token."""
        return self.start + self.num_tokens == self.seq.num_tokens


@dataclass(frozen=True, slots=True)
class SchedulerOutput:
    """One step's plan. Apply `moves` (src slot, dst slot) to the KV cache first, all at once."""

    decodes: tuple[ScheduledChunk, ...] = ()
    prefills: tuple[ScheduledChunk, ...] = ()
    moves: tuple[tuple[int, int], ...] = ()
    move_length: int = 0  # positions to copy per moved slot (the longest moved request's context)

    @property
    def is_empty(self) -> bool:
        return not self.decodes and not self.prefills

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in (*self.decodes, *self.prefills))

    @property
    def chunks(self) -> tuple[ScheduledChunk, ...]:
        return (*self.decodes, *self.prefills)


class Scheduler:
    """Continuous batching over `max_num_seqs` KV slots (see the module docstring for the contract)."""

    def __init__(self, config: SchedulerConfig, admission: AdmissionPolicy = admit_all) -> None:
        problems = config.problems()
        if problems:
            raise ConfigError(problems, source="SchedulerConfig")
        self.config = config
        self.admission = admission
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order

    @property
    def num_free_slots(self) -> int:
        return self.config.max_num_seqs - len(self.running)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        """Queue a request. Raises EngineBusyError when the queue is full."""
        if len(self.waiting) >= self.config.max_waiting:
            raise EngineBusyError(
                f"{len(self.waiting)} requests are already waiting (max_waiting={self.config.max_waiting}); retry later"
            )
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def abort(self, request_id: str) -> Sequence | None:
        """Remove a request wherever it is; returns it (finished, reason "abort"), or None if unknown."""
        for seq in self.waiting:
            if seq.request_id == request_id:
                self.waiting.remove(seq)
                self._mark_finished(seq, "abort")
                return seq
        for seq in self.running:
            if seq.request_id == request_id:
                self.finish(seq, "abort")
                return seq
        return None

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """End a running request and free its slot."""
        self.running.remove(seq)
        self._mark_finished(seq, reason)

    def schedule(self) -> SchedulerOutput:
        """Plan the next step (see the contract)."""
        budget = self.config.max_num_batched_tokens
        decodes = [ScheduledChunk(s, s.num_computed, 1) for s in self.running if not s.is_prefilling]
        budget -= len(decodes)
        prefills: list[ScheduledChunk] = []
        for seq in self.running:
            if seq.is_prefilling and budget > 0:
                prefills.append(self._chunk(seq, budget))
                budget -= prefills[-1].num_tokens
        while self.waiting and budget > 0 and self.num_free_slots > 0:
            if not self.admission(self.waiting[0], self.running):
                break
            seq = self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            prefills.append(self._chunk(seq, budget))
            budget -= prefills[-1].num_tokens
        scheduled = {id(c.seq) for c in (*decodes, *prefills)}
        others = [s for s in self.running if id(s) not in scheduled]
        before = {id(s): s.slot for s in self.running}
        moves = assign_slots([c.seq for c in decodes], [c.seq for c in prefills], others, self.config.max_num_seqs)
        moved = [s.num_computed for s in self.running if before[id(s)] not in (None, s.slot)]
        decodes.sort(key=lambda c: c.seq.slot)
        prefills.sort(key=lambda c: c.seq.slot)
        return SchedulerOutput(tuple(decodes), tuple(prefills), tuple(moves), max(moved, default=0))

    def update(self, output: SchedulerOutput, sampled: Mapping[str, int]) -> None:
        """Advance every scheduled request; append the tokens sampled for chunks that `samples`."""
        for chunk in output.chunks:
            seq = chunk.seq
            if seq.status is not SequenceStatus.RUNNING:
                continue  # aborted while the step ran
            seq.num_computed = chunk.start + chunk.num_tokens
            if chunk.samples:
                seq.output_token_ids.append(sampled[seq.request_id])

    @staticmethod
    def _chunk(seq: Sequence, budget: int) -> ScheduledChunk:
        remaining = seq.num_tokens - seq.num_computed
        return ScheduledChunk(seq, seq.num_computed, min(remaining, budget))

    @staticmethod
    def _mark_finished(seq: Sequence, reason: FinishReason) -> None:
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        seq.slot = None


def assign_slots(
    decodes: list[Sequence], prefills: list[Sequence], others: Iterable[Sequence], num_slots: int
) -> list[tuple[int, int]]:
    """Give decodes slots [0, D), prefills [D, D + P), others the rest, moving as few requests as possible.

    Sets `seq.slot` on every request and returns the (src, dst) copies for requests that had a slot and
    moved. The copies form a partial permutation, to be applied simultaneously (gather, then scatter).
    """
    D, P = len(decodes), len(prefills)
    others = list(others)
    groups = ((decodes, range(0, D)), (prefills, range(D, D + P)), (others, range(D + P, num_slots)))
    moves: list[tuple[int, int]] = []
    for seqs, region in groups:
        kept = {s.slot for s in seqs if s.slot is not None and s.slot in region}
        free = iter(slot for slot in region if slot not in kept)
        for seq in seqs:
            if seq.slot is not None and seq.slot in kept:
                continue
            new = next(free)
            if seq.slot is not None:
                moves.append((seq.slot, new))
            seq.slot = new
    return moves
