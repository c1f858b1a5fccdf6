"""Logprobs in the runner and engine core on real tiny models: equal to log_softmax of the no-cache forward, for
sampled tokens and prompt tokens (across chunked prefill), computed only for the rows that asked, no other row
changes, and the outputs carry one entry per token and the prompt's once."""

from __future__ import annotations

import time

import pytest
import torch

from prefixtune.core import read_geometry
from prefixtune.core.inject import prefix_forward
from prefixtune.serve.engine.core import EngineCore
from prefixtune.serve.engine.kv_store import SlotKVStore
from prefixtune.serve.engine.logprobs import token_logprobs
from prefixtune.serve.engine.messages import GenerationOutput, SamplingParams, TokenLogprobs
from prefixtune.serve.engine.request import Sequence
from prefixtune.serve.engine.runner import ModelRunner
from prefixtune.serve.engine.scheduler import Scheduler, SchedulerConfig
from prefixtune.serve.metrics import ServeMetrics
from tests.conftest import make_model
from tests.core.test_head import make_family
from tests.serve.test_runner import compiled_prefixes, greedy_alone, make_requests
from tests.train.conftest import make_tokenizer

TOL = 1e-4


def reference_logprobs(model, ids: list[int], prefix) -> torch.Tensor:
    """(len(ids), V): log_softmax of one no-cache forward; row p scores token p + 1."""
    with torch.no_grad():
        return prefix_forward(model, torch.tensor([ids]), prefix_kvs=[prefix]).logits[0].float().log_softmax(-1)


def assert_matches(entry: TokenLogprobs, row: torch.Tensor, token: int, k: int) -> None:
    assert entry.token_id == token
    assert abs(entry.logprob - float(row[token])) <= TOL
    assert len(entry.top) == k
    values = [v for _, v in entry.top]
    assert values == sorted(values, reverse=True)
    for i, v in entry.top:
        assert abs(v - float(row[i])) <= TOL
    if k:  # the top k really are the k largest
        assert values[-1] >= float(row.topk(k).values[-1]) - TOL


def run(model, requests: list[Sequence], slots: int, budget: int) -> tuple[dict, dict, int]:
    """Run to the end; returns (sampled-token logprobs, prompt logprobs) per request and the LM head's rows."""
    store = SlotKVStore(slots, read_geometry(model).kv_shapes, 64)
    runner, scheduler = ModelRunner(model, store), Scheduler(SchedulerConfig(slots, budget))
    for r in requests:
        scheduler.add(r)
    logprobs: dict[str, list] = {r.request_id: [] for r in requests}
    prompt: dict[str, list] = {r.request_id: [] for r in requests}
    head_rows = [0]
    hook = model.get_output_embeddings().register_forward_hook(
        lambda _m, args, _o: head_rows.__setitem__(0, head_rows[0] + args[0].shape[:-1].numel())
    )
    try:
        while scheduler.has_work:
            plan = scheduler.schedule()
            step = runner.execute(plan)
            scheduler.update(plan, step.sampled)
            for rid, entry in step.logprobs.items():
                logprobs[rid].append(entry)
            for rid, entries in step.prompt_logprobs.items():
                prompt[rid].extend(entries)
            for s in list(scheduler.running):
                if len(s.output_token_ids) >= s.sampling.max_tokens:
                    scheduler.finish(s, "length")
    finally:
        hook.remove()
    return logprobs, prompt, head_rows[0]


@pytest.mark.parametrize("model_kind", ["gpt2", "llama", "qwen3"])
def test_mixed_batch_logprobs_equal_the_no_cache_forward_and_others_are_unchanged(model_kind):
    model = make_model(model_kind)
    prefixes = compiled_prefixes(model)
    greedy = SamplingParams(max_tokens=4, temperature=0)
    requests = make_requests(prefixes, 8, greedy, seed=1)
    asks = {"r1": (5, None), "r2": (2, 3), "r5": (None, 0)}  # request -> (logprobs, prompt_logprobs)
    for rid, (k, kp) in asks.items():
        r = next(r for r in requests if r.request_id == rid)
        r.sampling = SamplingParams(max_tokens=4, temperature=0, logprobs=k, prompt_logprobs=kp)
    got, prompt, _ = run(model, requests, slots=4, budget=9)  # small budget: prompts are chunked

    for r in requests:
        assert r.output_token_ids == greedy_alone(model, r.prompt_token_ids, r.prefix, 4), r.request_id
        k, kp = asks.get(r.request_id, (None, None))
        ref = reference_logprobs(model, r.prompt_token_ids + r.output_token_ids, r.prefix)
        P = r.num_prompt_tokens
        if k is None:
            assert got[r.request_id] == []
        else:
            assert len(got[r.request_id]) == 4
            for i, entry in enumerate(got[r.request_id]):
                assert_matches(entry, ref[P - 1 + i], r.output_token_ids[i], k)
                assert entry.top[0][0] == entry.token_id  # greedy: the chosen token is the most likely
        if kp is None:
            assert prompt[r.request_id] == []
        else:
            assert len(prompt[r.request_id]) == P - 1
            for p, entry in enumerate(prompt[r.request_id], start=1):
                assert_matches(entry, ref[p - 1], r.prompt_token_ids[p], kp)


def test_prompt_logprobs_span_chunks_and_the_lm_head_runs_only_for_asking_rows():
    model = make_model("llama")
    prefixes = compiled_prefixes(model)
    long = Sequence("long", list(range(5, 35)), SamplingParams(max_tokens=2, temperature=0, prompt_logprobs=2))
    others = make_requests(prefixes, 3, SamplingParams(max_tokens=2, temperature=0), seed=2)
    requests = [long, *others]
    _, prompt, head_rows = run(model, requests, slots=4, budget=8)  # the 30-token prompt takes several chunks
    ref = reference_logprobs(model, long.prompt_token_ids, None)
    assert [e.token_id for e in prompt["long"]] == long.prompt_token_ids[1:]
    for p, entry in enumerate(prompt["long"], start=1):
        assert_matches(entry, ref[p - 1], long.prompt_token_ids[p], 2)
    # Each forward keeps one position per row; beyond that only the asking row's prompt positions.
    plain = [Sequence(r.request_id, r.prompt_token_ids, SamplingParams(max_tokens=2, temperature=0)) for r in requests]
    for seq, r in zip(plain, requests, strict=True):
        seq.prefix, seq.num_virtual_tokens = r.prefix, r.num_virtual_tokens
    _, _, plain_rows = run(model, plain, slots=4, budget=8)
    assert head_rows == plain_rows + long.num_prompt_tokens - 1


def test_token_logprobs_keeps_the_chosen_token_outside_the_top_k():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]])
    out = token_logprobs(logits, [0, 0], [2, 0])
    ref = logits.log_softmax(-1)
    assert out[0].token_id == 0 and abs(out[0].logprob - float(ref[0, 0])) < 1e-6
    assert [i for i, _ in out[0].top] == [3, 2]
    assert out[1].top == () and abs(out[1].logprob - float(ref[1, 0])) < 1e-6


def test_engine_outputs_carry_one_entry_per_token_and_the_prompt_logprobs_once():
    model = make_model("llama")
    tokenizer = make_tokenizer()
    outputs: list[GenerationOutput] = []
    core = EngineCore(
        Scheduler(SchedulerConfig(2, 4)),  # 4 tokens per step: the prompt is chunked
        ModelRunner(model, SlotKVStore(2, read_geometry(model).kv_shapes, 64)),
        decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        eos_token_ids=frozenset({2}),
        max_len=64,
        emit=outputs.append,
        metrics=ServeMetrics(),
    )
    sampling = SamplingParams(max_tokens=6, temperature=0, ignore_eos=True, logprobs=2, prompt_logprobs=1)
    prompt = tokenizer("ten tokens")["input_ids"]
    core.add(Sequence("a", prompt, sampling))
    core.add(Sequence("b", prompt, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True)))
    core.start()
    try:
        deadline = time.monotonic() + 30
        while sum(o.finish_reason is not None for o in outputs) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        core.stop(10)
    mine = [o for o in outputs if o.request_id == "a"]
    assert mine[0].prompt_logprobs is not None and len(mine[0].prompt_logprobs) == len(prompt)
    assert mine[0].prompt_logprobs[0] is None
    assert [e.token_id for e in mine[0].prompt_logprobs[1:]] == prompt[1:]
    assert all(o.prompt_logprobs is None for o in mine[1:])  # the first output only
    assert all(len(o.logprobs) == len(o.token_ids) == 1 for o in mine)
    assert [o.token_ids for o in mine] == [o.token_ids for o in outputs if o.request_id == "b"]
    assert all(o.logprobs is None and o.prompt_logprobs is None for o in outputs if o.request_id == "b")


@pytest.mark.parametrize("kind", ["cohere", "gemma2"])
def test_prompt_logprobs_use_the_family_head_that_scales_or_caps(kind):
    # Before: the runner multiplied by the output embeddings, which ignores Cohere's logit_scale and Gemma 2's
    # final soft-capping, so prompt logprobs disagreed with the forward's on those families.
    model = make_family(kind)
    seq = Sequence("r", list(range(5, 17)), SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=1))
    _, prompt, _ = run(model, [seq], slots=1, budget=5)
    ref = reference_logprobs(model, seq.prompt_token_ids, None)
    for p, entry in enumerate(prompt["r"], start=1):
        assert_matches(entry, ref[p - 1], seq.prompt_token_ids[p], 1)
