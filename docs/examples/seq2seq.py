"""docs/seq2seq.md's example (the lines between the markers are its code block, word for word; the tests run
this file): a prefix on T5's encoder, decoder and cross-attention, mixed adapters per row, beam search, save
and load. It builds a tiny random T5 itself (no encoder-decoder weights ship with the tests)."""

# example:start
import torch
import transformers

import prefixtune as pt

config = transformers.T5Config(
    vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0
)
model = transformers.T5ForConditionalGeneration(config).eval()  # or AutoModelForSeq2SeqLM.from_pretrained(...)
pm = pt.attach(model, pt.PrefixConfig(method="prefix", num_virtual_tokens=8), adapter_name="all-sites")
pm.add_adapter("cross-only", pt.PrefixConfig(method="kv", num_virtual_tokens=4, sites=("cross",)))
print(pm.compile("all-sites").sites)  # ('encoder', 'encoder', 'decoder', 'decoder', 'cross', 'cross')

ids = torch.randint(3, 128, (2, 9))  # two encoder inputs, the second right-padded
mask = torch.ones_like(ids)
mask[1, 6:] = 0
decoder_ids = torch.zeros(2, 1, dtype=torch.long)  # T5's decoder start token
logits = pm(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids, adapter_names=["all-sites", None]).logits
out = pm.generate(ids, attention_mask=mask, adapter_names=["all-sites", "cross-only"], num_beams=3, max_new_tokens=5)

pm.save_adapter("cross-only-adapter", "cross-only")  # adapter_config.json records sites=["cross"]
pt.load_adapter(pm, "cross-only-adapter", adapter_name="reloaded")  # onto the same base model
# example:end
assert logits.shape == (2, 1, 128) and out.shape[0] == 2
assert pm.adapter_config("reloaded").sites == ("cross",)
print("seq2seq example: three sites, mixed adapters, beam search, save and load")
