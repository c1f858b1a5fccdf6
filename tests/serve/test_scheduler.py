"""The scheduler as pure logic, fed synthetic runner outputs (no torch, no model)."""

from __future__ import annotations

import itertools
import random

import pytest

from prefixtune.errors import ConfigError, EngineBusyError
from prefixtune.serve.engine.messages import SamplingParams
from prefixtune.serve.engine.request import Sequence, SequenceStatus
from prefixtune.serve.engine.scheduler import Scheduler, SchedulerConfig, SchedulerOutput, assign_slots

_ids = itertools.count()


def seq(prompt_len: int, max_tokens: int = 4, adapter: str | None = None) -> Sequence:
    return Sequence(f"r{next(_ids)}", list(range(prompt_len)), SamplingParams(max_tokens=max_tokens), adapter)


def fake_step(s: Scheduler, out: SchedulerOutput) -> None:
    """What the engine does after the runner: update, then finish requests that reached max_tokens."""
    s.update(out, {c.seq.request_id: 7 for c in out.chunks if c.samples})
    for c in out.chunks:
        if len(c.seq.output_token_ids) >= c.seq.sampling.max_tokens and c.seq.status is SequenceStatus.RUNNING:
            s.finish(c.seq, "length")


def check_layout(out: SchedulerOutput) -> None:
    slots = [c.seq.slot for c in out.chunks]
    assert slots == list(range(len(slots))), "decodes then prefills, in one contiguous run from slot 0"
    assert all(c.num_tokens == 1 for c in out.decodes)


def test_config_problems_are_listed_together():
    with pytest.raises(ConfigError) as info:
        Scheduler(SchedulerConfig(max_num_seqs=0, max_num_batched_tokens=-1, max_waiting=-1))
    assert len(info.value.problems) == 3


def test_queue_limit_raises_busy():
    s = Scheduler(SchedulerConfig(max_num_seqs=1, max_num_batched_tokens=8, max_waiting=2))
    s.add(seq(3))
    s.add(seq(3))
    with pytest.raises(EngineBusyError):
        s.add(seq(3))


def test_prefill_is_chunked_under_the_token_budget_and_decodes_go_first():
    s = Scheduler(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=8))
    a, b = seq(3, max_tokens=5), seq(20)
    s.add(a)
    s.add(b)
    out = s.schedule()
    assert [(c.seq, c.num_tokens) for c in out.prefills] == [(a, 3), (b, 5)]
    fake_step(s, out)
    out = s.schedule()
    check_layout(out)
    assert [c.seq for c in out.decodes] == [a]
    assert [(c.seq, c.start, c.num_tokens) for c in out.prefills] == [(b, 5, 7)]
    assert out.num_tokens == 8


def test_requests_join_and_leave_between_steps_and_every_request_finishes():
    rng = random.Random(0)
    s = Scheduler(SchedulerConfig(max_num_seqs=3, max_num_batched_tokens=6))
    pending = [seq(rng.randint(1, 9), rng.randint(1, 5)) for _ in range(12)]
    all_seqs = list(pending)
    batch_sizes = []
    for _ in range(200):
        if pending and rng.random() < 0.5:
            s.add(pending.pop())
        out = s.schedule()
        if out.is_empty and not pending and not s.has_work:
            break
        check_layout(out)
        assert out.num_tokens <= 6 and len(s.running) <= 3
        batch_sizes.append(len(out.chunks))
        fake_step(s, out)
    assert all(x.status is SequenceStatus.FINISHED for x in all_seqs)
    assert all(len(x.output_token_ids) == x.sampling.max_tokens for x in all_seqs)
    assert max(batch_sizes) > 1


def test_abort_frees_the_slot_for_a_waiting_request():
    s = Scheduler(SchedulerConfig(max_num_seqs=1, max_num_batched_tokens=8))
    a, b = seq(2), seq(2)
    s.add(a)
    s.add(b)
    fake_step(s, s.schedule())
    assert s.abort(a.request_id) is a and a.finish_reason == "abort" and a.slot is None
    out = s.schedule()
    assert [c.seq for c in out.prefills] == [b] and b.slot == 0
    assert s.abort("unknown") is None


def test_admission_policy_can_hold_requests_back():
    s = Scheduler(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=16), admission=lambda c, r: len(r) < 1)
    a, b = seq(2), seq(2)
    s.add(a)
    s.add(b)
    assert [c.seq for c in s.schedule().chunks] == [a]


def test_assign_slots_moves_only_what_it_must():
    d = [seq(1) for _ in range(3)]
    for i, x in enumerate(d):
        x.slot = i
    assert assign_slots(d, [], [], 4) == []
    d[0].slot = None  # d0 finished; others keep their slots where possible
    survivors = d[1:]
    moves = assign_slots(survivors, [], [], 4)
    assert sorted(x.slot for x in survivors) == [0, 1]
    assert len(moves) == 1
    newcomer = seq(4)
    moves = assign_slots(survivors, [newcomer], [], 4)
    assert moves == [] and newcomer.slot == 2


def test_assign_slots_is_a_permutation():
    rng = random.Random(1)
    for _ in range(50):
        seqs = [seq(1) for _ in range(6)]
        slots = rng.sample(range(8), 6)
        for x, slot in zip(seqs, slots, strict=True):
            x.slot = slot
        rng.shuffle(seqs)
        moves = assign_slots(seqs[:2], seqs[2:4], seqs[4:], 8)
        assert {x.slot for x in seqs[:2]} == {0, 1} and {x.slot for x in seqs[2:4]} == {2, 3}
        dsts = [d for _, d in moves]
        assert len(set(dsts)) == len(dsts)
        assert len({x.slot for x in seqs}) == 6
