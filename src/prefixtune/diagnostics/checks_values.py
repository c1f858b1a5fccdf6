"""Doctor checks of an adapter's values: NaN/Inf, a prefix shared by all layers, all-zero prefixes, and a
"prefix" adapter that is really prompt tuning.

Each check takes (`RawAdapter`, `ModelFacts`) and returns a list of `Finding`s (empty: nothing wrong).
"""

from __future__ import annotations

import torch

from prefixtune.core.hf.layers import decoder_layers
from prefixtune.diagnostics.findings import Finding
from prefixtune.diagnostics.model_facts import ModelFacts
from prefixtune.diagnostics.raw_adapter import RawAdapter

# P^l counts as "the carried state of P^0" within this tolerance (fp32 recomputation noise is ~1e-6).
CARRIED_RTOL, CARRIED_ATOL = 1e-4, 1e-5


def check_finite(adapter: RawAdapter, facts: ModelFacts) -> list[Finding]:
    """Any stored tensor holds NaN or Inf (the loader refuses such files; here they are counted)."""
    bad = {}
    for name, tensor in {**adapter.tensors, **adapter.extra}.items():
        if torch.is_floating_point(tensor):
            count = int((~torch.isfinite(tensor)).sum())
            if count:
                bad[name] = count
    if not bad:
        return []
    listed = ", ".join(f"{name} ({count})" for name, count in list(bad.items())[:6])
    return [
        Finding(
            "non_finite",
            f"{sum(bad.values())} NaN/Inf values in {len(bad)} tensors: {listed}",
            "training diverged or the file was damaged: retrain with a lower learning rate (or gradient "
            "clipping), or restore the adapter from an earlier checkpoint",
        )
    ]


def check_shared(adapter: RawAdapter, facts: ModelFacts) -> list[Finding]:
    """Every layer has the same prefix: one P copied to all layers instead of a P^l per layer."""
    layers = adapter.layers()
    if not layers or len(layers) < 2 or not layers[0].any():
        return []
    if not all(t.shape == layers[0].shape and torch.equal(t, layers[0]) for t in layers[1:]):
        return []
    return [
        Finding(
            "shared_prefix",
            f"all {len(layers)} layers have the identical prefix; prefix tuning trains a different P^l for "
            "every layer, so the layers were probably tied or filled from one tensor",
            "check the code that built or saved the prefixes (one tensor broadcast to all layers?) and retrain",
        )
    ]


def check_zero(adapter: RawAdapter, facts: ModelFacts) -> list[Finding]:
    """Per-layer prefixes (or the prompt) that are exactly zero: never trained, or saved before training."""
    layers = adapter.layers()
    if layers is None:
        layers = [adapter.tensors["prompt"]]
    zero = [i for i, t in enumerate(layers) if t.numel() and not t.any()]
    if not zero:
        return []
    if len(zero) == len(layers):
        what = "the prompt is" if adapter.method == "prompt" else f"the prefixes of all {len(layers)} layers are"
        message = f"{what} all zeros: the adapter was never trained, or saved before training"
    else:
        message = f"the prefixes of layers {zero} are all zeros while the others are not"
    return [Finding("zero_prefix", message, "train the adapter (or save it after training), then check again")]


def check_embedding_only(adapter: RawAdapter, facts: ModelFacts) -> list[Finding]:
    """A "prefix" adapter whose P^l (l >= 1) are just the states the model computes from P^0.

    Such an adapter prepends vectors once, at the embedding layer, and lets the layers carry them: that is
    prompt tuning (DESIGN.md §1), not prefix tuning, whatever its files say.
    """
    if adapter.method != "prefix":
        return []
    P = adapter.tensors["prefix"]  # (L, m, d)
    L, d = facts.geometry.num_layers, facts.geometry.hidden_size
    if P.shape[0] != L or P.shape[-1] != d or L < 2 or not bool(torch.isfinite(P).all()) or not P[0].any():
        return []
    carried = _carried_states(facts, P[0])  # (L, m, d)
    if not torch.allclose(carried[1:], P[1:].to(carried.dtype), rtol=CARRIED_RTOL, atol=CARRIED_ATOL):
        return []
    return [
        Finding(
            "embedding_only",
            "this 'prefix' adapter only acts at the embedding layer: every P^l for l >= 1 is exactly the state "
            "the frozen model computes from P^0, so it is prompt tuning with P^0 as the soft prompt, not a "
            "per-layer prefix (an adapter initialized from vocab/text activations and never trained looks so too)",
            "load it as method 'prompt' with P^0 as the prompt (same results, L times fewer numbers), or train a "
            "real per-layer prefix (method 'prefix')",
        )
    ]


@torch.no_grad()
def _carried_states(facts: ModelFacts, first: torch.Tensor) -> torch.Tensor:
    """Run the model with layer 0's input replaced by `first` (m, d) at positions 0..m-1; each layer's input."""
    model, layers = facts.model, decoder_layers(facts.model)
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
