"""Doctor checks owned by the hidden-state methods ("prefix", "prompt"): vector width, and a "prefix" adapter
that is really prompt tuning. Called through `Parametrization.width_problem` / `diagnose`, never by name.
"""

from __future__ import annotations

import torch
from torch import nn

from prefixtune.core import ModelGeometry, decoder_layers, has_bidirectional_attention
from prefixtune.parametrizations.base import Observation

# P^l counts as "the carried state of P^0" within this tolerance (fp32 recomputation noise is ~1e-6).
CARRIED_RTOL, CARRIED_ATOL = 1e-4, 1e-5


def hidden_width_problem(name: str, tensor: torch.Tensor, geometry: ModelGeometry) -> str | None:
    """Why `tensor`'s vectors (last dimension) do not have the model's hidden size, or None."""
    width = int(tensor.shape[-1])
    if width == geometry.hidden_size:
        return None
    return f"the adapter's {name} vectors have width {width}, but the model's hidden size is {geometry.hidden_size}"


def embedding_only(P: torch.Tensor, model: nn.Module) -> list[Observation]:
    """A "prefix" adapter P (L, m, d) whose P^l (l >= 1) are just the states the model computes from P^0.

    Such an adapter prepends vectors once, at the embedding layer, and lets the layers carry them: that is
    prompt tuning (DESIGN.md §1), not prefix tuning, whatever its files say.
    """
    if P.shape[0] < 2 or not bool(torch.isfinite(P).all()) or not P[0].any():
        return []
    if has_bidirectional_attention(model):
        # On an encoder a prompt attends to the input, so states carried from P^0 alone are not what a prompt
        # gives: the equivalence this check rests on holds only under causal attention.
        return []
    carried = _carried_states(model, P[0])  # (L, m, d)
    if not torch.allclose(carried[1:], P[1:].to(carried.dtype), rtol=CARRIED_RTOL, atol=CARRIED_ATOL):
        return []
    return [
        Observation(
            "embedding_only",
            "this 'prefix' adapter only acts at the embedding layer: every P^l for l >= 1 is exactly the state "
            "the frozen model computes from P^0, so it is prompt tuning with P^0 as the soft prompt, not a "
            "per-layer prefix (an adapter initialized from vocab/text activations and never trained looks so too)",
            "load it as method 'prompt' with P^0 as the prompt (same results, L times fewer numbers), or train a "
            "real per-layer prefix (method 'prefix')",
        )
    ]


@torch.no_grad()
def _carried_states(model: nn.Module, first: torch.Tensor) -> torch.Tensor:
    """Run the model with layer 0's input replaced by `first` (m, d) at positions 0..m-1; each layer's input."""
    layers = decoder_layers(model)
    weight = model.get_input_embeddings().weight
    m = first.shape[0]
    seen: list[torch.Tensor] = []

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if module is layers[0]:
            hidden = first[None].to(device=hidden.device, dtype=hidden.dtype)  # (1, m, d)
            args, kwargs = ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})
        seen.append(hidden[0].float().cpu())
        return args, kwargs

    handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers]
    try:
        dummy = torch.zeros(1, m, weight.shape[1], dtype=weight.dtype, device=weight.device)
        model(inputs_embeds=dummy, position_ids=torch.arange(m, device=weight.device)[None], use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(seen)  # (L, m, d)
