"""docs/core-contract.md's listing (the lines between the markers are its code block, word for word; the tests
run this file on a tiny model): every call of the contract, with what it returns."""

# example:start
import torch
import transformers

import prefixtune as pt
from example_inputs import ids, labels, mask, model_path  # your model and a token batch
from prefixtune.core.inject import KVStore, prefix_forward  # for engines that own their KV cache (serve/)

hf_model = transformers.AutoModelForCausalLM.from_pretrained(model_path)
cfg = pt.PrefixConfig(method="prefix", num_virtual_tokens=16)  # method: "prefix" | "kv" | "prompt"
# other fields: init="auto" | "task" | "text" | "vocab" | "random", init_text=None, reparam_hidden=None
pm = pt.attach(hf_model, cfg, adapter_name="default")  # freezes the base (requires_grad False)
pm.add_adapter("b", pt.PrefixConfig(method="kv", num_virtual_tokens=8))  # several adapters on one base
pm.set_adapter("b")
assert pm.active_adapter == "b" and pm.adapter_names == ["default", "b"]  # list[str]
assert isinstance(pm.adapter_config("b"), pt.PrefixConfig)
pm.set_adapter_metadata("b", {"note": "free-form"})  # saved in adapter_config.json ("metadata"); train/
assert pm.adapter_metadata("b") == {"note": "free-form"}  # stores the task format here (template, labels)
assert pm.base_model is hf_model  # the HF model (PreTrainedModel)

out = pm(input_ids=ids, attention_mask=mask, labels=labels, adapter_names=["default", "b", None])
# -> transformers CausalLMOutput (loss when labels given; labels=-100 ignored, HF shift rule)
new = pm.generate(input_ids=ids, attention_mask=mask, adapter_names=["default", "b", None], max_new_tokens=4)
assert new.shape == (3, ids.shape[1] + 4)  # LongTensor (B, prompt_len + new); HF generate semantics and kwargs
kv = pm.compile("default")  # pt.PrefixKV, differentiable
with pm.compile_once():  # forwards with grad inside share one compile per adapter; its gradients
    pm(input_ids=ids, attention_mask=mask, labels=labels, adapter_names=["default"] * 3).loss.backward()
# ... reach the parameters when the block ends (gradient accumulation)
params = pm.trainable_parameters("default")  # list[torch.nn.Parameter]
assert pm.num_trainable_parameters("default") == sum(p.numel() for p in params)
pm.save_adapter("out/default", "default")  # atomic directory write
pm2 = pt.load_adapter(hf_model, "out/default", adapter_name="loaded")  # an HF model or a PrefixModel
pm.remove_adapter("b")
logits = pt.reference_forward(pm, ids, mask, adapter_name="default")  # (B, T, V), the literal spec
fp = pt.fingerprint(hf_model)  # dict: the base-model fingerprint recorded in adapters

# PrefixKV (frozen dataclass): the compiled artifact every method produces
kv = kv.detach()
assert len(kv.keys) == len(kv.values) == kv.num_layers  # tuples over layers of tensors (H_kv, m, D), exactly
assert kv.keys[0].shape[1] == kv.num_virtual_tokens == 16  # what attention consumes
facts = (kv.method, kv.position_convention, kv.fingerprint, kv.nbytes)  # str, str, dict, int
kv16 = kv.to(device="cpu", dtype=torch.float16)

# The one injection mechanism, for engines that own their KV cache (serve/); no store: attention over the batch
store: KVStore | None = None
out = prefix_forward(hf_model, ids, prefix_kvs=[kv, None, kv], attention_mask=mask, position_ids=None, kv_store=store)
assert out.logits.shape == (*ids.shape, hf_model.config.vocab_size)  # (B, T, V)
# a KVStore is any object with
#   update(layer_idx: int, key: Tensor(B,H_kv,T_new,D), value: Tensor) ->
#          (keys_all (B,H_kv,T_kv,D), values_all, mask (B,1,T_new,T_kv) bool, True = may attend)
# prefix_forward then calls the HF model with use_cache=False, and the attention of every layer attends
# over [row's prefix ; keys_all]. position_ids default: m_row + (cumsum(attention_mask) - 1); with a
# kv_store the caller passes position_ids itself (m_row + tokens already in the row's cache + arange).

# Errors: prefixtune.errors.{PrefixtuneError, ConfigError, AdapterFormatError, IncompatibleBaseModelError,
#         AdapterNotFoundError, UnsupportedModelError, DataError, EngineBusyError}
# example:end

assert [type(f) for f in facts] == [str, str, dict, int] and kv16.keys[0].dtype == torch.float16
with torch.no_grad():
    fast = pm(input_ids=ids, attention_mask=mask, adapter_names=["default"] * 3).logits
real = mask.bool()  # the reference path's logits at padding positions are not meaningful
assert torch.allclose(logits[real], fast[real], atol=1e-4), (logits[real] - fast[real]).abs().max()
print("core contract example: every call ran")
