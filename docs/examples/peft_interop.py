"""docs/peft-interop.md's example (the lines between the markers are its code block, word for word; the tests
run this file on a tiny model): export to PEFT, load PEFT's directory back, same logits."""

# example:start
import torch
import transformers

import prefixtune as pt
from example_inputs import ids, mask, model_path
from prefixtune.io.peft_export import export_peft

model = transformers.AutoModelForCausalLM.from_pretrained(model_path)
pm = pt.attach(model, pt.PrefixConfig(method="kv", num_virtual_tokens=8))
export_peft(pm, "peft-out")  # PeftModel.from_pretrained(model, "peft-out") works
pm2 = pt.load_adapter(model, "peft-out", adapter_name="from-peft")  # a PEFT directory loads directly
with torch.no_grad():
    ours = pm(input_ids=ids, attention_mask=mask).logits
    back = pm2(input_ids=ids, attention_mask=mask, adapter_names=["from-peft"] * 3).logits
assert torch.allclose(ours, back, atol=1e-5)
# example:end

print("peft interop example: the PEFT export loads back with the same logits")
