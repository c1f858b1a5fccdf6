"""Token-level agreement check behind bench/RESULTS-serve.md: prefixtune's engine (one batch of 12) and the
PEFT path of bench/serve_peft_engine.py against the no-cache reference loop over the core's forward, SmolLM2-135M,
one random kv adapter (m=16), 12 prompts of 32 random tokens, 32 greedy tokens. Prints matches and, at a first
divergence, the reference's top-2 logit margin.

    .venv/bin/python bench/serve_agreement.py
"""

import random
import tempfile
from pathlib import Path

import peft
import torch

import prefixtune as pt
from prefixtune.core import read_geometry
from prefixtune.core.inject import prefix_forward
from prefixtune.io.peft_export import export_peft
from prefixtune.models import load_model
from prefixtune.serve.engine.kv_store import SlotKVStore
from prefixtune.serve.engine.messages import SamplingParams
from prefixtune.serve.engine.request import Sequence
from prefixtune.serve.engine.runner import ModelRunner
from prefixtune.serve.engine.scheduler import Scheduler, SchedulerConfig

torch.set_num_threads(1)
model, tok = load_model("smollm2-135m")
pbase, _ = load_model("smollm2-135m")
tmp = Path(tempfile.mkdtemp())
pm = pt.attach(pbase, pt.PrefixConfig(method="kv", num_virtual_tokens=16, seed=0), adapter_name="a")
pm.save_adapter(tmp / "a", "a")
export_peft(pm, tmp / "pa", "a")
with torch.no_grad():
    kv = pt.load_adapter(model, tmp / "a", adapter_name="a").compile("a").detach()
pm.remove_adapter("a")
rng = random.Random(0)
V = model.get_input_embeddings().weight.shape[0]
prompts = [[rng.randrange(100, V) for _ in range(32)] for _ in range(12)]
T = 32
# ours: engine batch
store = SlotKVStore(12, read_geometry(model).kv_shapes, 128)
runner = ModelRunner(model, store)
sched = Scheduler(SchedulerConfig(12, 512))
seqs = [
    Sequence(str(i), p, SamplingParams(max_tokens=T, temperature=0), prefix=kv, num_virtual_tokens=16)
    for i, p in enumerate(prompts)
]
for s in seqs:
    sched.add(s)
while any(len(s.output_token_ids) < T for s in seqs):
    plan = sched.schedule()
    sched.update(plan, runner.execute(plan).sampled)
ours = [s.output_token_ids[:T] for s in seqs]


# reference: no-cache loop, one request at a time, recording top-2 margins
def ref(p):
    ids, out, margins = list(p), [], []
    for _ in range(T):
        with torch.no_grad():
            lg = prefix_forward(model, torch.tensor([ids]), prefix_kvs=[kv]).logits[0, -1]
        top = lg.topk(2).values
        margins.append(float(top[0] - top[1]))
        t = int(lg.argmax())
        out.append(t)
        ids.append(t)
    return out, margins


refs = [ref(p) for p in prompts]
# PEFT path as in bench/serve_peft_engine.py
ppm = peft.PeftModel.from_pretrained(pbase, str(tmp / "pa"), adapter_name="a").eval()
with torch.inference_mode():
    ids = torch.tensor(prompts)
    B, n = ids.shape
    out = ppm(input_ids=ids, attention_mask=torch.ones(B, n, dtype=torch.long), use_cache=True)
    cache, mask = out.past_key_values, torch.ones(B, 16 + n, dtype=torch.long)
    toks = []
    for _step in range(T):
        t = out.logits[:, -1].argmax(-1)
        toks.append(t)
        mask = torch.cat([mask, torch.ones(B, 1, dtype=torch.long)], 1)
        out = ppm.get_base_model()(input_ids=t[:, None], attention_mask=mask, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
peft_out = torch.stack(toks, 1).tolist()
for name, outs in (("ours", ours), ("peft", peft_out)):
    diverge = []
    for o, (r, margins) in zip(outs, refs, strict=True):
        if o != r:
            i = next(k for k in range(T) if o[k] != r[k])
            diverge.append((i, round(margins[i], 4)))
    print(
        name,
        "equal to reference:",
        sum(o == r for o, (r, _) in zip(outs, refs, strict=True)),
        "/",
        len(prompts),
        "first divergence (step, top-2 logit margin):",
        diverge,
    )
print("median top-2 margin over all steps:", sorted(m for _, ms in refs for m in ms)[len(prompts) * T // 2])
