"""`ModelRunner`: runs one scheduled step on the frozen model through the core's one injection mechanism.

A step is at most two forwards: the decoding rows (one token each, slots [0, D)) and the prefill chunks
(slots [D, D + P), left-padded). Each row attends to its own request's compiled prefix, or none, via
`prefixtune.core.inject.prefix_forward` with this engine's `SlotKVStore`; there is no second
implementation of prefix attention here. Positions: m_row + tokens already in the row (DESIGN.md §1).
"""

from __future__ import annotations

import torch
from torch import nn

from prefixtune.core.inject import PrefixBatch, build_prefix_batch, prefix_forward
from prefixtune.serve.engine.kv_store import SlotKVStore
from prefixtune.serve.engine.sampling import make_generator, sample
from prefixtune.serve.engine.scheduler import ScheduledChunk, SchedulerOutput


class ModelRunner:
    """Executes `SchedulerOutput`s and returns the sampled tokens.

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
    def execute(self, output: SchedulerOutput) -> dict[str, int]:
        """Run one step. Returns request_id -> sampled token, for every chunk that `samples`."""
        self.store.move(output.moves, output.move_length)
        sampled: dict[str, int] = {}
        for group in (output.decodes, output.prefills):
            if group:
                sampled.update(self._run_group(group))
        return sampled

    def _prefix_batch(self, prefixes: list) -> PrefixBatch:
        """The stacked prefixes of these rows, reused while the rows' PrefixKV objects are the same ones."""
        for previous, batch in self._stacked:
            if len(previous) == len(prefixes) and all(a is b for a, b in zip(previous, prefixes, strict=True)):
                return batch
        batch = build_prefix_batch(self.model, prefixes)
        # Holding the PrefixKVs keeps the identity checks valid (no id reuse after an eviction).
        self._stacked = [*self._stacked[-1:], (tuple(prefixes), batch)]
        return batch

    def _run_group(self, group: tuple[ScheduledChunk, ...]) -> dict[str, int]:
        lo = group[0].seq.slot
        assert lo is not None and all(c.seq.slot == lo + r for r, c in enumerate(group)), "slots not contiguous"
        T = max(c.num_tokens for c in group)
        rows = [[0] * (T - c.num_tokens) + c.seq.pending_token_ids(c.num_tokens) for c in group]
        input_ids = torch.tensor(rows, dtype=torch.long, device=self.device)  # (B, T), left-padded
        view = self.store.step_view(lo, [c.start for c in group], [c.num_tokens for c in group])
        m = torch.tensor([c.seq.num_virtual_tokens for c in group], device=self.device)  # (B,)
        position_ids = view.position_offsets + m[:, None]  # (B, T)
        out = prefix_forward(
            self.model,
            input_ids,
            prefix_batch=self._prefix_batch([c.seq.prefix for c in group]),
            position_ids=position_ids,
            kv_store=view,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1]  # (B, V): every row's last real token is at T - 1
        greedy = logits.argmax(-1).tolist()  # one device sync for every greedy row
        sampled = {}
        for r, chunk in enumerate(group):
            if not chunk.samples:
                continue
            seq = chunk.seq
            if seq.sampling.is_greedy:
                sampled[seq.request_id] = int(greedy[r])
                continue
            if "generator" not in seq.state:
                seq.state["generator"] = make_generator(seq.sampling)
            sampled[seq.request_id] = sample(logits[r], seq.sampling, seq.state["generator"])
        return sampled
