"""The decoding-step attention (`_split_attention`) equals plain softmax attention over [prefix ; context]."""

from __future__ import annotations

import pytest
import torch

from prefixtune.core.attention import _allowed, _split_attention, _to_additive
from prefixtune.core.prefix_batch import PrefixBatch


def explicit_attention(query, key, value, pk, pv, allowed):
    """softmax(q [pk ; k]^T / sqrt(D), masked) [pv ; v], with key/value heads repeated per query head."""
    B, H_q, _, D = query.shape
    group = H_q // key.shape[1]
    keys = torch.cat([pk.expand(B, -1, -1, -1), key], dim=2).repeat_interleave(group, dim=1)
    values = torch.cat([pv.expand(B, -1, -1, -1), value], dim=2).repeat_interleave(group, dim=1)
    scores = (query @ keys.transpose(-1, -2)) * D**-0.5
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (scores.softmax(-1) @ values).transpose(1, 2)  # (B, T_q, H_q, D)


@pytest.mark.parametrize("T_q", [1, 3])
@pytest.mark.parametrize("shared", [True, False])
def test_split_attention_equals_softmax_over_the_concatenation(T_q: int, shared: bool) -> None:
    torch.manual_seed(0)
    B, H_q, H_kv, D, T_kv, M = 3, 4, 2, 8, 7, 5
    query = torch.randn(B, H_q, T_q, D)
    key, value = torch.randn(B, H_kv, T_kv, D), torch.randn(B, H_kv, T_kv, D)
    pk, pv = torch.randn(1 if shared else B, H_kv, M, D), torch.randn(1 if shared else B, H_kv, M, D)
    lengths = torch.tensor([M, 2, 0])  # rows with a full prefix, a shorter one, and none
    pvalid = torch.arange(M)[None, :] < lengths[:, None]
    ctx_mask = torch.ones(B, 1, T_q, T_kv, dtype=torch.bool)
    ctx_mask[1, ..., :3] = False  # left padding on row 1
    ctx_mask[..., -T_q:] &= torch.ones(T_q, T_q, dtype=torch.bool).tril()  # causal among the new queries
    ctx = _allowed(ctx_mask, B, T_q, T_kv, query.device)

    allowed = torch.cat([pvalid[:, None, None, :].expand(B, 1, T_q, M), ctx], dim=-1)
    bias = _to_additive(allowed[:, :, None], torch.float32)  # (B, 1, 1, T_q, M + T_kv), as prefix_attention builds

    got = _split_attention(query, key, value, pk, pv, bias, None)
    want = explicit_attention(query, key, value, pk, pv, allowed)
    assert got.shape == (B, T_q, H_q, D)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_memo_rebuilds_for_another_mask_or_key() -> None:
    batch = PrefixBatch((), (), torch.zeros(1, 0, dtype=torch.bool), torch.zeros(1, dtype=torch.long))
    calls = []

    def build(tag):
        return lambda: calls.append(tag) or torch.tensor(len(calls))

    mask_a, mask_b = torch.ones(2), torch.ones(2)  # equal values, different objects
    first = batch.memo(("k", 1), mask_a, build("a"))
    assert batch.memo(("k", 1), mask_a, build("again")) is first  # same mask object and key: reused
    batch.memo(("k", 1), mask_b, build("b"))  # another mask object: rebuilt
    batch.memo(("k", 2), mask_b, build("c"))  # another key: rebuilt
    assert calls == ["a", "b", "c"]


def test_the_registered_function_resolves_one_typed_context():
    from torch import nn

    from prefixtune.core.attention import AttentionContext
    from prefixtune.core.capture import KVCapture
    from prefixtune.core.prefix_batch import active_prefix_batch

    module = nn.Module()
    module.layer_idx = 2
    batch = PrefixBatch.build([None], device=torch.device("cpu"), dtype=torch.float32)
    kwargs = {"prefix_batch": batch, "scaling": 0.5}
    assert AttentionContext.resolve(module, kwargs) == AttentionContext(2, batch, None)
    assert kwargs == {"scaling": 0.5}  # prefixtune's own entries never reach the model's attention
    capture = KVCapture(3)
    assert AttentionContext.resolve(module, {"kv_capture": capture}) == AttentionContext(2, None, capture)
    with active_prefix_batch(batch):  # generate binds the batch instead of passing it
        assert AttentionContext.resolve(module, {}).prefix_batch is batch
    assert AttentionContext.resolve(module, {}).prefix_batch is None
