"""`ModelRunner`: runs one scheduled step on the frozen model through the core's one injection mechanism.

A step is at most two forwards: the decoding rows (one token each, slots [0, D)) and the prefill chunks
(slots [D, D + P), left-padded). Each row attends to its own request's compiled prefix, or none, via
`prefixtune.core.inject.prefix_forward` with this engine's `SlotKVStore`; there is no second
implementation of prefix attention here. Positions: m_row + tokens already in the row (DESIGN.md §1).

Logprobs cost nothing to the rows that did not ask: the LM head still runs on each row's last position only,
the sampled tokens' logprobs come from those logits for the asking rows, and prompt logprobs (echo) apply the
model's own head (`core.output_logits`: output embeddings plus any family scaling or soft-capping) to the
final hidden states of the asking rows' prompt positions, chunk by chunk; the tests compare both with the
no-cache forward, also on families that scale (Cohere) or cap (Gemma 2) their logits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from prefixtune.core import output_logits
from prefixtune.core.inject import PrefixBatch, build_prefix_batch, prefix_forward
from prefixtune.serve.engine.kv_store import SlotKVStore
from prefixtune.serve.engine.logprobs import token_logprobs
from prefixtune.serve.engine.messages import TokenLogprobs
from prefixtune.serve.engine.sampling import make_generator, sample
from prefixtune.serve.engine.scheduler import ScheduledChunk, SchedulerOutput

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StepOutput:
    """What one step produced.

    Attributes:
        sampled: request_id -> next token, for every chunk that `samples` (what `Scheduler.update` takes).
        logprobs: request_id -> the sampled token's logprobs, for those whose `sampling.logprobs` is set.
        prompt_logprobs: request_id -> logprobs of the prompt tokens after this chunk's positions
            (tokens start + 1 .. min(start + num_tokens, P - 1)), for prefill chunks whose
            `sampling.prompt_logprobs` is set; possibly empty (a one-token prompt scores nothing).
        failed: requests whose own work failed this step (their rows only); the engine aborts them.
    """

    sampled: dict[str, int] = field(default_factory=dict)
    logprobs: dict[str, TokenLogprobs] = field(default_factory=dict)
    prompt_logprobs: dict[str, tuple[TokenLogprobs, ...]] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)


class ModelRunner:
    """Executes `SchedulerOutput`s and returns the sampled tokens (and logprobs where asked).

    Args:
        model: a transformers causal LM (eval mode, frozen).
        store: the engine's KV cache.
    """

    def __init__(self, model: nn.Module, store: SlotKVStore) -> None:
        self.model = model
        self.store = store
        self.device = model.get_input_embeddings().weight.device
        # The stacked prefixes of the last two groups (a step runs a decode group and a prefill group) and the
        # PrefixKVs they were built from: steps usually keep the same rows, so stacking is not redone per step.
        self._stacked: list[tuple[tuple, PrefixBatch]] = []

    @torch.inference_mode()
    def execute(self, output: SchedulerOutput) -> StepOutput:
        """Run one step: the sampled token of every chunk that `samples`, and the logprobs asked for."""
        self.store.move(output.moves, output.move_length)
        step = StepOutput()
        for group in (output.decodes, output.prefills):
            if group:
                self._run_group(group, step)
        return step

    def _prefix_batch(self, prefixes: list) -> PrefixBatch:
        """The stacked prefixes of these rows, reused while the rows' PrefixKV objects are the same ones."""
        for previous, batch in self._stacked:
            if len(previous) == len(prefixes) and all(a is b for a, b in zip(previous, prefixes, strict=True)):
                return batch
        batch = build_prefix_batch(self.model, prefixes)
        # Holding the PrefixKVs keeps the identity checks valid (no id reuse after an eviction).
        self._stacked = [*self._stacked[-1:], (tuple(prefixes), batch)]
        return batch

    def _run_group(self, group: tuple[ScheduledChunk, ...], step: StepOutput) -> None:
        lo = group[0].seq.slot
        assert lo is not None and all(c.seq.slot == lo + r for r, c in enumerate(group)), "slots not contiguous"
        T = max(c.num_tokens for c in group)
        rows = [[0] * (T - c.num_tokens) + c.seq.pending_token_ids(c.num_tokens) for c in group]
        input_ids = torch.tensor(rows, dtype=torch.long, device=self.device)  # (B, T), left-padded
        view = self.store.step_view(lo, [c.start for c in group], [c.num_tokens for c in group])
        m = torch.tensor([c.seq.num_virtual_tokens for c in group], device=self.device)  # (B,)
        position_ids = view.position_offsets + m[:, None]  # (B, T)
        scoring = [r for r, c in enumerate(group) if _scores_prompt(c)]
        out = prefix_forward(
            self.model,
            input_ids,
            prefix_batch=self._prefix_batch([c.seq.prefix for c in group]),
            position_ids=position_ids,
            kv_store=view,
            logits_to_keep=1,
            output_hidden_states=bool(scoring),  # only when a row asked for prompt logprobs
        )
        logits = out.logits[:, -1]  # (B, V): every row's last real token is at T - 1
        if scoring:
            hidden = out.hidden_states[-1]  # (B, T, d): the final (normed) hidden states
            for r in scoring:
                step.prompt_logprobs[group[r].seq.request_id] = self._prompt_logprobs(group[r], hidden[r])
        self._sample(group, logits, step)

    def _sample(self, group: tuple[ScheduledChunk, ...], logits: torch.Tensor, step: StepOutput) -> None:
        """Sample each row that reaches its last token; logprobs of the sampled tokens of rows that asked."""
        greedy = logits.argmax(-1).tolist()  # one device sync for every greedy row
        for r, chunk in enumerate(group):
            if not chunk.samples:
                continue
            seq = chunk.seq
            if seq.sampling.is_greedy:
                step.sampled[seq.request_id] = int(greedy[r])
                continue
            if seq.state.generator is None:
                seq.state.generator = make_generator(seq.sampling)
            try:
                step.sampled[seq.request_id] = sample(logits[r], seq.sampling, seq.state.generator)
            except (RuntimeError, ValueError):  # one request's sampling must not fail the others in the batch
                logger.exception("sampling failed for request %s; aborting it", seq.request_id)
                step.failed.add(seq.request_id)
        asking = [
            r
            for r, c in enumerate(group)
            if c.samples and c.seq.sampling.logprobs is not None and c.seq.request_id in step.sampled
        ]
        if asking:
            seqs = [group[r].seq for r in asking]
            rows = logits[torch.tensor(asking, device=logits.device)]  # (R, V)
            found = token_logprobs(
                rows, [step.sampled[s.request_id] for s in seqs], [s.sampling.logprobs or 0 for s in seqs]
            )
            step.logprobs.update((s.request_id, lp) for s, lp in zip(seqs, found, strict=True))

    def _prompt_logprobs(self, chunk: ScheduledChunk, hidden: torch.Tensor) -> tuple[TokenLogprobs, ...]:
        """Logprobs of the prompt tokens this chunk's positions predict. hidden: (T, d), the row left-padded.

        Position p's logits score token p + 1, which is known for every position but the prompt's last (whose
        logits give the first sampled token), so each chunk scores its own part without waiting for the next.
        """
        seq, n = chunk.seq, chunk.num_tokens
        count = min(chunk.start + n, seq.num_prompt_tokens - 1) - chunk.start
        if count <= 0:
            return ()
        T = hidden.shape[0]
        states = hidden[T - n : T - n + count]  # (count, d): positions start .. start + count - 1
        logits = output_logits(self.model, states)  # (count, V): the model's own head (scale, soft-cap)
        targets = seq.prompt_token_ids[chunk.start + 1 : chunk.start + 1 + count]
        return tuple(token_logprobs(logits, targets, [seq.sampling.prompt_logprobs or 0] * count))


def _scores_prompt(chunk: ScheduledChunk) -> bool:
    """Whether this chunk is a prefill chunk of a request that asked for prompt logprobs."""
    return chunk.seq.sampling.prompt_logprobs is not None and chunk.start < chunk.seq.num_prompt_tokens
