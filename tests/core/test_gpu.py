"""The same properties on CUDA (skipped without a GPU): fused sdpa kernels and half precision."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from tests.conftest import batch, make_model

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_fast_path_equals_reference_on_cuda(model_kind: str, method: str) -> None:
    pm = pt.attach(make_model(model_kind).cuda(), pt.PrefixConfig(method=method, num_virtual_tokens=8, seed=0))
    ids, mask = (t.cuda() for t in batch(padding="left"))
    with torch.no_grad():
        fast = pm(input_ids=ids, attention_mask=mask).logits
    ref = pt.reference_forward(pm, ids, mask)
    assert float((fast - ref)[mask.bool()].abs().max()) <= 1e-4


def test_bf16_generate_matches_no_cache_loop_on_cuda(model_kind: str) -> None:
    model = make_model(model_kind).to("cuda", torch.bfloat16)
    pm = pt.attach(model, pt.PrefixConfig(method="prefix", num_virtual_tokens=8, seed=0))
    ids, mask = (t.cuda() for t in batch(padding="left"))
    out = pm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    assert out.shape == (ids.shape[0], ids.shape[1] + 4)
    with torch.no_grad():
        logits = pm(
            input_ids=out[:, :-1], attention_mask=torch.cat([mask, torch.ones_like(out[:, ids.shape[1] : -1])], 1)
        ).logits
    # Each generated token is the argmax (up to bf16 ties) of the no-cache forward at its position.
    picked = logits[:, ids.shape[1] - 1 :].float().argmax(-1)
    assert (picked == out[:, ids.shape[1] :]).float().mean() >= 0.9
