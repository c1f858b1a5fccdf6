"""What the examples in this folder take from outside: a model directory and a token batch for it.

`python docs/examples/NAME.py MODEL_DIR` runs an example on that model (tests/docs runs each on a tiny one);
the batch is three rows of random token ids, the last row left-padded, and labels equal to the ids.
"""

import sys

import torch

model_path = sys.argv[1] if len(sys.argv) > 1 else "path/to/model"
ids = torch.randint(3, 100, (3, 8), generator=torch.Generator().manual_seed(0))  # (B, T)
mask = torch.ones_like(ids)
mask[2, :3] = 0  # left padding
labels = ids.masked_fill(mask == 0, -100)
micro_batches = [
    {"input_ids": ids[i : i + 1], "attention_mask": mask[i : i + 1], "labels": labels[i : i + 1]} for i in range(2)
]
