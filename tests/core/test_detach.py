"""`PrefixModel.detach()` gives the base model back exactly as it was: attention implementation, layer
forwards, hooks, attributes and `requires_grad`; its outputs equal a never-attached twin's bit for bit. Hooks
needed for compiling exist only while compiling."""

from __future__ import annotations

import pytest
import torch

import prefixtune as pt
from prefixtune.core import decoder_layers
from tests.conftest import batch, make_model


def snapshot(model: torch.nn.Module) -> dict[str, object]:
    """Everything attaching could change, as plain values."""
    return {
        "implementations": [
            getattr(m.config, "_attn_implementation", None) for m in model.modules() if hasattr(m, "config")
        ],
        "attributes": {name: sorted(vars(m)) for name, m in model.named_modules()},
        "hooks": {
            name: (len(m._forward_pre_hooks), len(m._forward_hooks), len(m._backward_hooks))
            for name, m in model.named_modules()
        },
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
    }


def use_every_path(pm: pt.PrefixModel) -> None:
    """Forward, a training step through the compile (with accumulation), and generate."""
    ids, mask = batch()
    optimizer = torch.optim.SGD(pm.trainable_parameters(), lr=0.1)
    with pm.compile_once():
        pm(ids, attention_mask=mask, labels=ids).loss.backward()
    optimizer.step()
    pm.generate(ids[:1, :3], max_new_tokens=3, do_sample=False)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_detach_restores_the_model_bit_for_bit(model_kind: str, attn: str, method: str) -> None:
    model, twin = make_model(model_kind, attn), make_model(model_kind, attn)
    model.lm_head.weight.requires_grad_(True)  # a user's own choice, given back as it was
    before = snapshot(model)
    pm = pt.attach(model, pt.PrefixConfig(method=method, num_virtual_tokens=3, init="random", seed=0))
    use_every_path(pm)
    assert pm.detach() is model
    assert snapshot(model) == before
    ids, mask = batch(padding="left")
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=mask).logits, twin(ids, attention_mask=mask).logits)
    prompt = ids[:1, -4:]
    assert torch.equal(
        model.generate(prompt, max_new_tokens=4, do_sample=False),
        twin.generate(prompt, max_new_tokens=4, do_sample=False),
    )
    with pytest.raises(RuntimeError, match="detached"):
        pm(ids, attention_mask=mask)


def test_compiling_leaves_no_hooks_on_the_layers() -> None:
    model = make_model("llama")
    pm = pt.attach(model, pt.PrefixConfig(method="prefix", num_virtual_tokens=3, init="random", seed=0))
    seen: list[int] = []

    def count_hooks(module, args, kwargs):  # runs inside the compile's capture run
        seen.append(len(decoder_layers(model)[1]._forward_pre_hooks))

    handle = decoder_layers(model)[0].register_forward_pre_hook(count_hooks, with_kwargs=True)
    try:
        pm.compile()
    finally:
        handle.remove()
    assert seen == [1]  # the capture's hook on layer 1, present while compiling
    for layer in decoder_layers(model):
        assert not layer._forward_pre_hooks and "forward" not in vars(layer)
