"""Sampling one token from a row of logits: extreme temperatures stay valid (a tenant's tiny temperature used
to overflow to NaN probabilities and fail the whole engine step), ordinary ones are unchanged."""

from __future__ import annotations

import pytest
import torch

from prefixtune.serve.engine.messages import SamplingParams
from prefixtune.serve.engine.sampling import sample


@pytest.mark.parametrize("temperature", [1.401298464324817e-45, 1e-30, 1e-8])
@pytest.mark.parametrize(("top_k", "top_p"), [(0, 1.0), (5, 1.0), (0, 0.5)])
def test_a_tiny_temperature_samples_the_argmax(temperature, top_k, top_p) -> None:
    logits = torch.randn(128, generator=torch.Generator().manual_seed(0)) * 5
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    assert sample(logits, params, torch.Generator().manual_seed(1)) == int(logits.argmax())


def test_ordinary_temperatures_draw_from_softmax_of_logits_over_t() -> None:
    """The same draws as multinomial over softmax(logits / T) with the same generator state."""
    logits = torch.randn(64, generator=torch.Generator().manual_seed(2)) * 3
    params = SamplingParams(temperature=0.7)
    for seed in range(20):
        expected = int(torch.multinomial((logits / 0.7).softmax(-1), 1, generator=torch.Generator().manual_seed(seed)))
        assert sample(logits, params, torch.Generator().manual_seed(seed)) == expected


def test_a_huge_temperature_is_uniform_not_nan() -> None:
    logits = torch.randn(16, generator=torch.Generator().manual_seed(3))
    draws = {sample(logits, SamplingParams(temperature=1e300), torch.Generator().manual_seed(s)) for s in range(200)}
    assert len(draws) > 12
