"""Scheduler + runner + slot KV store on real tiny models: every request's tokens equal running it alone,
across adapters of different lengths and methods, chunked prefill, slot moves and seeded sampling."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from prefixtune.core import read_geometry
from prefixtune.core.inject import prefix_forward
from prefixtune.serve.engine.kv_store import SlotKVStore
from prefixtune.serve.engine.messages import SamplingParams
from prefixtune.serve.engine.request import Sequence
from prefixtune.serve.engine.runner import ModelRunner
from prefixtune.serve.engine.scheduler import Scheduler, SchedulerConfig
from tests.conftest import VOCAB, make_model


def compiled_prefixes(model) -> list:
    configs = [
        pt.PrefixConfig(method="prefix", num_virtual_tokens=3, seed=1),
        pt.PrefixConfig(method="kv", num_virtual_tokens=5, seed=2),
        pt.PrefixConfig(method="prompt", num_virtual_tokens=2, seed=3),
    ]
    pm = pt.attach(model, configs[0], adapter_name="p0")
    for i, config in enumerate(configs[1:], start=1):
        pm.add_adapter(f"p{i}", config)
    with torch.no_grad():
        return [None] + [pm.compile(f"p{i}").detach() for i in range(3)]


def run_engine(model, requests: list[Sequence], slots: int, budget: int) -> dict[str, list[int]]:
    store = SlotKVStore(slots, read_geometry(model).kv_shapes, 64)
    runner, scheduler = ModelRunner(model, store), Scheduler(SchedulerConfig(slots, budget))
    for r in requests:
        scheduler.add(r)
    max_batch = 0
    while scheduler.has_work:
        plan = scheduler.schedule()
        max_batch = max(max_batch, len(plan.chunks))
        scheduler.update(plan, runner.execute(plan).sampled)
        for s in list(scheduler.running):
            if len(s.output_token_ids) >= s.sampling.max_tokens:
                scheduler.finish(s, "length")
    assert max_batch > 1
    return {r.request_id: r.output_token_ids for r in requests}


def greedy_alone(model, prompt: list[int], prefix, n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            ids.append(int(prefix_forward(model, torch.tensor([ids]), prefix_kvs=[prefix]).logits[0, -1].argmax()))
    return ids[len(prompt) :]


def make_requests(prefixes: list, n: int, sampling: SamplingParams, seed: int = 0) -> list[Sequence]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        prompt = torch.randint(3, VOCAB, (int(torch.randint(1, 14, (1,), generator=g)),), generator=g).tolist()
        prefix = prefixes[i % len(prefixes)]
        m = 0 if prefix is None else prefix.num_virtual_tokens
        out.append(Sequence(f"r{i}", prompt, sampling, prefix=prefix, num_virtual_tokens=m))
    return out


@pytest.mark.parametrize("model_kind", ["gpt2", "llama", "qwen3"])
def test_mixed_batches_equal_each_request_alone(model_kind):
    model = make_model(model_kind)
    prefixes = compiled_prefixes(model)
    requests = make_requests(prefixes, 8, SamplingParams(max_tokens=4, temperature=0))
    got = run_engine(model, requests, slots=4, budget=9)  # small budget: prompts are chunked
    for r in requests:
        assert got[r.request_id] == greedy_alone(model, r.prompt_token_ids, r.prefix, 4), r.request_id


def test_seeded_sampling_does_not_depend_on_the_batch():
    model = make_model("llama")
    prefixes = compiled_prefixes(model)
    sampling = SamplingParams(max_tokens=6, temperature=0.9, top_k=20, top_p=0.9, seed=7)
    together = run_engine(model, make_requests(prefixes, 6, sampling), slots=6, budget=64)
    for i, r in enumerate(make_requests(prefixes, 6, sampling)):
        store = SlotKVStore(1, read_geometry(model).kv_shapes, 64)
        runner, scheduler = ModelRunner(model, store), Scheduler(SchedulerConfig(1, 64))
        scheduler.add(r)
        while len(r.output_token_ids) < 6:
            plan = scheduler.schedule()
            scheduler.update(plan, runner.execute(plan).sampled)
        assert r.output_token_ids == together[f"r{i}"]


def test_slot_moves_keep_the_context():
    store = SlotKVStore(3, [(1, 2)], 4)
    store.keys[0][:, 0, :, 0] = torch.tensor([[1.0, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]])
    store.move([(0, 2), (2, 0)], 3)  # a swap: both sides read before either is written
    assert store.keys[0][:, 0, :, 0].tolist() == [[3, 3, 3, 1], [2, 2, 2, 2], [1, 1, 1, 3]]
