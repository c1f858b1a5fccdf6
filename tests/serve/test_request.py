"""`Sequence.state` is a typed, slotted `RequestState` (issue 11, item 4: was a dict with string keys shared by
the engine core and the runner, where a misspelt key silently made a new entry)."""

from __future__ import annotations

import pytest

from prefixtune.serve.engine.messages import SamplingParams
from prefixtune.serve.engine.request import RequestState, Sequence


def test_request_state_is_typed_and_starts_empty():
    seq = Sequence("r", [5, 6], SamplingParams(max_tokens=2))
    assert seq.state == RequestState(detokenizer=None, generator=None, last_token_time=None, prompt_logprobs=None)
    assert Sequence("s", [5], SamplingParams()).state is not seq.state  # one state per request
    seq.state.last_token_time = 1.0
    with pytest.raises(AttributeError):
        seq.state.last_token = 2.0  # a misspelt name fails here; a dict key would have been a new entry
