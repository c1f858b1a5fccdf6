"""A Prefix-Tuning+-style contender for the quality suite (issue 14): bench-only, never a library method.

Prefix-Tuning+ (Wang et al. 2025, arXiv 2506.13674) traces prefix tuning's weakness to the softmax: prefix
keys compete with the input's keys for the same attention mass, so a prefix that matters more must take weight
from the input. It moves the prefix's contribution out of the softmax, as a separate, query-dependent term
added to each head's output: o_h = Attn(q_h, K, V) + phi(q_h) M_h, a linear-attention "memory" M_h that is
trained directly. This is our reading of the paper (not its code): phi = elu + 1 on the pre-rotary query,
M_h = A_h B_h of rank r (B = 0 at the start, so training starts at the base model, like LoRA).

Why it stays in bench/: the added term depends on the query, so it is not a key/value prefix. It cannot be
compiled to the per-layer KV prefix that every prefixtune adapter is (DESIGN.md), cannot ride vLLM's KV
connector or the prefix cache, and in a mixed batch each row needs its own M per layer: a batched
gather-matmul per layer, as multi-LoRA servers do for LoRA. Measured here for quality only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prefixtune.models import load_model


class QueryMemory(nn.Module):
    """phi(q_h) A_h B_h for every head of one attention layer: (B, T, heads * head_dim) -> same shape."""

    def __init__(self, heads: int, head_dim: int, rank: int, generator: torch.Generator) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.A = nn.Parameter(torch.randn(heads, head_dim, rank, generator=generator) / head_dim**0.5)
        self.B = nn.Parameter(torch.zeros(heads, rank, head_dim))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        b, t, _ = q.shape
        features = F.elu(q.view(b, t, self.heads, self.head_dim).float()) + 1  # (B, T, H, Dh), positive
        out = torch.einsum("bthd,hdr,hre->bthe", features, self.A, self.B)  # (B, T, H, Dh)
        return out.reshape(b, t, -1).to(q.dtype)


def attach_ptplus(rank: int, seed: int) -> tuple[nn.Module, object, list[nn.Parameter]]:
    """SmolLM2-135M with a QueryMemory per layer hooked in: q_proj's output is kept, and its memory term is
    added to o_proj's input (the concatenated heads). Returns the model, tokenizer and the trainable tensors."""
    model, tok = load_model("smollm2-135m")
    model.requires_grad_(False)
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    generator = torch.Generator().manual_seed(seed)
    memories = nn.ModuleList()
    for layer in model.model.layers:
        attn = layer.self_attn
        memory = QueryMemory(config.num_attention_heads, head_dim, rank, generator)
        memories.append(memory)
        captured: dict[str, torch.Tensor] = {}

        def keep_query(_module, _inputs, output, captured=captured):
            captured["q"] = output

        def add_memory(_module, inputs, memory=memory, captured=captured):
            return (inputs[0] + memory(captured.pop("q")),)

        attn.q_proj.register_forward_hook(keep_query)
        attn.o_proj.register_forward_pre_hook(add_memory)
    model.ptplus_memories = memories  # keeps the modules reachable; the base weights stay frozen
    return model, tok, list(memories.parameters())
