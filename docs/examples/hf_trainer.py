"""docs/distributed.md's Trainer / SFTTrainer example (the lines between the markers are its code block, word for
word; the tests run this file on a tiny model, in one process): train, save, load the adapter."""

from pathlib import Path

# example:start
import torch
import transformers
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, TrainingArguments
from trl import SFTConfig

import prefixtune as pt
from example_inputs import model_path
from prefixtune.integrations.hf_trainer import PrefixTrainer, prefix_sft_trainer_class

model = transformers.AutoModelForCausalLM.from_pretrained(model_path)
tok = transformers.AutoTokenizer.from_pretrained(model_path)
ds = [{"input_ids": tok(f"{i}: abc")["input_ids"]} for i in range(16)]  # your tokenized rows
val = ds[:4]
prompt_completion_ds = Dataset.from_list([{"prompt": f"{i}:", "completion": " xyz"} for i in range(16)])

pm = pt.attach(model, pt.PrefixConfig(num_virtual_tokens=16), tokenizer=tok)
trainer = PrefixTrainer(
    pm,
    TrainingArguments("out", gradient_checkpointing=True),
    train_dataset=ds,
    eval_dataset=val,
    data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
    processing_class=tok,
)
trainer.train()  # or trainer.train(resume_from_checkpoint="out/checkpoint-500")
trainer.save_model("out/adapter")  # adapter_config.json + adapter.safetensors, no base weights
pt.load_adapter(model, "out/adapter")

SFT = prefix_sft_trainer_class()  # trl.SFTTrainer with the same behaviour (trl 1.16)
sft_args = SFTConfig("out-sft", use_cpu=not torch.cuda.is_available())  # TRL's default bf16 needs a GPU
SFT(pm, sft_args, train_dataset=prompt_completion_ds, processing_class=tok).train()
# example:end

assert (Path("out/adapter") / "adapter_config.json").is_file() and "default" in pm.adapter_names
print("hf_trainer example: Trainer and SFTTrainer trained the prefix")
