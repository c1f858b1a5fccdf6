"""The README's library example (the lines between the markers are the README's code block, word for word;
tests/docs/test_examples.py runs this file on a tiny model and checks the README still shows it)."""

# example:start
import transformers

import prefixtune as pt
from example_inputs import ids, labels, mask, micro_batches, model_path  # your model and a token batch

model = transformers.AutoModelForCausalLM.from_pretrained(model_path)  # any HF causal LM (sdpa or eager)
cfg = pt.PrefixConfig(method="prefix", num_virtual_tokens=16)
pm = pt.attach(model, cfg)  # freezes the base; returns a PrefixModel with adapter "default"
pm.add_adapter("b", pt.PrefixConfig(method="kv", num_virtual_tokens=8))  # several adapters on one base

rows = ["default", "b", None]  # one batch, a different adapter per row (None = bare model)
out = pm(input_ids=ids, attention_mask=mask, labels=labels, adapter_names=rows)
out.loss.backward()  # only pm.trainable_parameters() receive gradients

pm.generate(input_ids=ids, attention_mask=mask, adapter_names=rows, max_new_tokens=20)
kv = pm.compile("default")  # PrefixKV: per layer (H_kv, m, D) keys and values
pm.save_adapter("runs/my-adapter", "default")  # adapter_config.json + adapter.safetensors, written atomically
pm2 = pt.load_adapter(model, "runs/my-adapter", adapter_name="loaded")  # validated: fingerprint, shapes, NaN/Inf
pt.reference_forward(pm, ids, mask, adapter_name="default")  # the literal per-layer spec, for tests
pm.prefix_states("default")  # method "prefix": the effective P^l, [L, m, d]
pm.trainable_parameters(), pm.num_trainable_parameters()
pm.gradient_checkpointing_enable()  # works with prefixes (PEFT refuses)
with pm.compile_once():  # gradient accumulation: compile each adapter once per step
    for mb in micro_batches:
        (pm(**mb).loss / len(micro_batches)).backward()
# example:end

print(f"library example: {pm.num_trainable_parameters():,} trainable parameters, adapters {pm.adapter_names}")
