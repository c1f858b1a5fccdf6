"""`generate` through the injection mechanism: batch-invariant, equal to a no-cache loop over forward."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from tests.conftest import batch, make_model


@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_generate_equals_no_cache_greedy_loop(model_kind: str, method: str) -> None:
    pm = pt.attach(make_model(model_kind), pt.PrefixConfig(method=method, num_virtual_tokens=5, seed=0))
    ids, mask = batch(B=3, padding="left")
    out = pm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    cur, cur_mask = ids, mask
    with torch.no_grad():
        for _ in range(8):
            nxt = pm(input_ids=cur, attention_mask=cur_mask).logits[:, -1].argmax(-1, keepdim=True)
            cur = torch.cat([cur, nxt], 1)
            cur_mask = torch.cat([cur_mask, torch.ones_like(nxt)], 1)
    assert torch.equal(out, cur)


def test_generate_is_batch_invariant(model_kind: str) -> None:
    pm = pt.attach(make_model(model_kind), pt.PrefixConfig(method="prefix", num_virtual_tokens=6, seed=0))
    ids, mask = batch(B=3, padding="left")
    together = pm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    for r in range(3):
        keep = mask[r].bool()
        alone = pm.generate(input_ids=ids[r : r + 1, keep], max_new_tokens=8, do_sample=False)
        assert torch.equal(together[r, ids.shape[1] :], alone[0, int(keep.sum()) :])


def test_beam_search_and_sampling_use_the_prefix() -> None:
    pm = pt.attach(make_model("llama"), pt.PrefixConfig(method="prefix", num_virtual_tokens=4, seed=0))
    pm.add_adapter("b", pt.PrefixConfig(method="prefix", num_virtual_tokens=4, seed=5))
    ids, mask = batch(B=2, padding="left")
    beams = pm.generate(input_ids=ids, attention_mask=mask, num_beams=3, num_return_sequences=2, max_new_tokens=5)
    assert beams.shape == (4, ids.shape[1] + 5)
    # Row by row, beam search with a mixed batch equals each row alone.
    mixed = pm.generate(
        input_ids=ids, attention_mask=mask, adapter_names=["default", "b"], num_beams=3, max_new_tokens=5
    )
    for r, name in enumerate(["default", "b"]):
        keep = mask[r].bool()
        alone = pm.generate(input_ids=ids[r : r + 1, keep], adapter_names=[name], num_beams=3, max_new_tokens=5)
        assert torch.equal(mixed[r, ids.shape[1] :], alone[0, int(keep.sum()) :])
    torch.manual_seed(0)
    sampled = pm.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=20, max_new_tokens=5)
    assert sampled.shape == (2, ids.shape[1] + 5)


def test_prefix_changes_generation() -> None:
    model = make_model("gpt2")
    ids, mask = batch(B=2, padding="left")
    pm = pt.attach(model, pt.PrefixConfig(method="kv", num_virtual_tokens=8, seed=0))
    with torch.no_grad():
        for p in pm.trainable_parameters():
            p.mul_(30)  # a strong prefix
    with_prefix = pm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    bare = pm.generate(
        input_ids=ids, attention_mask=mask, adapter_names=[None, None], max_new_tokens=8, do_sample=False
    )
    assert not torch.equal(with_prefix, bare)
