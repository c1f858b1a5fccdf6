"""What a generative engine answers to an encoder-only call: `classify` refused (a 400, never a 500).

One job: the `Engine` protocol's `classify` for engines that serve causal LMs (the built-in `AsyncEngine`,
vLLM). No torch.
"""

from __future__ import annotations

from prefixtune.serve.engine.messages import Classification, ClassifyRequest
from prefixtune.serve.errors import NotAnEncoderError


class GenerativeEngineMethods:
    """The `Engine` protocol's `classify` for an engine serving a generative model (a base class)."""

    model_name: str

    async def classify(self, request: ClassifyRequest) -> list[Classification]:
        raise NotAnEncoderError(
            f"the model {self.model_name!r} is generative; /v1/classify needs a server whose --model is an encoder "
            "(BERT, RoBERTa, ModernBERT, all-minilm-l6-v2); use /v1/completions or /v1/chat/completions"
        )
