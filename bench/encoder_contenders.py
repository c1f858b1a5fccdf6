"""The contenders of `encoder_quality.py` (issue 12) and the data they share: Rotten Tomatoes tokenized for
all-MiniLM-L6-v2, seeded batches, and one builder per kind (our adapter with the model's head or a mean-pool
head, full fine-tuning, and the frozen-feature linear probe / head-only on features computed once).
Bench code: uses prefixtune's public API only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

import prefixtune as pt
from prefixtune.encoder_models import load_encoder
from prefixtune.train.datasets import load_records

MODEL = "all-minilm-l6-v2"
DATASET = "rotten-tomatoes"
LABELS = ("negative", "positive")
EVAL_BATCH = 64


@dataclass
class Split:
    """One split, tokenized: token ids per text (truncated to max_length) and label ids."""

    ids: list[list[int]]
    labels: list[int]


@dataclass
class Contender:
    """What trains and how it is scored: a loss on a batch of row indices, logits for an eval split."""

    params: list[nn.Parameter]
    loss: Callable[[list[int]], torch.Tensor]
    logits: Callable[[str], torch.Tensor]  # split name -> (N, 2)
    modules: list[nn.Module]  # put in train mode while training
    extra_s_per_step: float = 0.0  # the frozen forward a cached-feature step stands for
    parts: dict[str, int] = field(default_factory=dict)


def batch_rows(num_examples: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Rows of step `step`: each epoch a fresh permutation seeded by (seed, epoch), last partial batch dropped
    (the rule of `prefixtune.train.loop.batch_rows` with one process)."""
    per_epoch = max(num_examples // batch_size, 1)
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    return order[position * batch_size : (position + 1) * batch_size]


def load_task(tokenizer, max_length: int, val_limit: int | None, test_limit: int | None) -> dict[str, Split]:
    """Train, validation and test splits of Rotten Tomatoes, tokenized with [CLS] ... [SEP]."""
    out = {}
    for split, limit in (("train", None), ("validation", val_limit), ("test", test_limit)):
        records = [value for _, value in load_records(DATASET, split, limit)]
        ids = tokenizer([r["text"] for r in records], truncation=True, max_length=max_length)["input_ids"]
        out[split] = Split(ids=ids, labels=[LABELS.index(r["label"]) for r in records])
    return out


def pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, n) and attention mask (B, n)."""
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def eval_logits(forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], split: Split, pad_id: int):
    """Logits (N, C) for every row of `split`, in batches of similar length (less padding), in row order."""
    order = sorted(range(len(split.ids)), key=lambda i: len(split.ids[i]))
    out: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for start in range(0, len(order), EVAL_BATCH):
            rows = order[start : start + EVAL_BATCH]
            logits = forward(*pad([split.ids[i] for i in rows], pad_id))
            out.update(zip(rows, logits, strict=True))
    return torch.stack([out[i] for i in range(len(split.ids))])


def through_model(forward: Callable, data: dict[str, Split], pad_id: int) -> tuple[Callable, Callable]:
    """Loss and logits functions of a contender that runs the (prefixed) model on every step."""

    def loss(rows: list[int]) -> torch.Tensor:
        ids, mask = pad([data["train"].ids[i] for i in rows], pad_id)
        labels = torch.tensor([data["train"].labels[i] for i in rows])
        return forward(input_ids=ids, attention_mask=mask, labels=labels).loss

    def logits(split: str) -> torch.Tensor:
        return eval_logits(lambda i, m: forward(input_ids=i, attention_mask=m).logits, data[split], pad_id)

    return loss, logits


def prefix_contender(spec: dict, seed: int, data: dict[str, Split], pad_id: int) -> Contender:
    """Our adapter (`prefix` or `kv`) with the adapter's own trainable copy of the classifier."""
    torch.manual_seed(seed)  # the new classifier's initialization
    return adapter_contender(spec, seed, data, pad_id, head_pooling="model")


def adapter_contender(spec: dict, seed: int, data: dict[str, Split], pad_id: int, head_pooling: str) -> Contender:
    """Our adapter (`spec`'s method, m and position convention) with its own trainable head."""
    model, tokenizer = load_encoder(MODEL, head="sequence", labels=list(LABELS))
    config = pt.PrefixConfig(
        method=spec["method"],
        num_virtual_tokens=spec["m"],
        seed=seed,
        train_head=True,
        head_pooling=head_pooling,
        position_convention=spec["convention"],
    )
    pm = pt.attach(model, config, tokenizer=tokenizer)
    loss, logits = through_model(pm, data, pad_id)
    return Contender(pm.trainable_parameters(), loss, logits, [pm], parts=pm.trainable_parts())


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens' states (B, n, d) -> (B, d), as sentence-transformers pools this model."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, n, 1)
    return (hidden * weights).sum(1) / weights.sum(1)


def prefix_mean_contender(spec: dict, seed: int, data: dict[str, Split], pad_id: int) -> Contender:
    """Our adapter with the library's mean-pooling head (`head_pooling="mean"`): a fresh linear classifier on
    the mean of the real tokens' last states (the probe's head) instead of the model's pooler + classifier.
    (RESULTS-encoder-quality.md's 76.7 was measured with this head built here, before it was a library
    option: same architecture and loss, another initialization draw.)"""
    return adapter_contender(spec, seed, data, pad_id, head_pooling="mean")


def full_contender(spec: dict, seed: int, data: dict[str, Split], pad_id: int) -> Contender:
    """BertForSequenceClassification with every weight trainable."""
    torch.manual_seed(seed)
    model, _ = load_encoder(MODEL, head="sequence", labels=list(LABELS))
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    loss, logits = through_model(model, data, pad_id)
    return Contender(params, loss, logits, [model], parts={"all": sum(p.numel() for p in params)})


BUILDERS = {"prefix": prefix_contender, "prefix_mean": prefix_mean_contender, "full": full_contender}


@dataclass
class Features:
    """The frozen encoder's outputs (eval mode) per row: mean-pooled states and BERT's pooler output."""

    mean: dict[str, dict[int, torch.Tensor]]
    pooler: dict[str, dict[int, torch.Tensor]]
    forward_s: list[float]  # seconds per frozen forward of one training batch

    def stacked(self, kind: str, split: str, rows: list[int]) -> torch.Tensor:
        table = (self.mean if kind == "probe" else self.pooler)[split]
        return torch.stack([table[i] for i in rows])


def frozen_features(data: dict[str, Split], pad_id: int, train_batches: list[list[int]]) -> Features:
    """Run the frozen encoder once over every training batch any run uses and over the eval splits."""
    model, _ = load_encoder(MODEL, head="sequence", labels=list(LABELS))
    encoder = model.bert.eval()
    feats = Features(mean={s: {} for s in data}, pooler={s: {} for s in data}, forward_s=[])

    def run(split: str, rows: list[int]) -> None:
        ids, mask = pad([data[split].ids[i] for i in rows], pad_id)
        with torch.no_grad():
            out = encoder(input_ids=ids, attention_mask=mask)
        mean = mean_pool(out.last_hidden_state, mask)  # (B, d)
        feats.mean[split].update(zip(rows, mean, strict=True))
        feats.pooler[split].update(zip(rows, out.pooler_output, strict=True))

    for rows in train_batches:
        todo = [i for i in rows if i not in feats.mean["train"]]
        if len(todo) == len(rows):  # a whole training batch: time it, as a probe step would run it
            start = time.perf_counter()
            run("train", rows)
            feats.forward_s.append(time.perf_counter() - start)
        elif todo:
            run("train", todo)
    for split in ("validation", "test"):
        order = sorted(range(len(data[split].ids)), key=lambda i: len(data[split].ids[i]))
        for start in range(0, len(order), EVAL_BATCH):
            run(split, order[start : start + EVAL_BATCH])
    return feats


def cached_contender(spec: dict, seed: int, data: dict[str, Split], feats: Features) -> Contender:
    """Linear probe (fresh linear on mean-pooled states) or head-only (the model's dropout + classifier on the
    pooler output), trained on the frozen encoder's cached features."""
    torch.manual_seed(seed)
    if spec["kind"] == "head":
        model, _ = load_encoder(MODEL, head="sequence", labels=list(LABELS))  # its classifier's seeded init
        head = nn.Sequential(nn.Dropout(model.config.hidden_dropout_prob), model.classifier)
    else:
        head = nn.Linear(384, len(LABELS))
    params = list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    kind = spec["kind"]

    def loss(rows: list[int]) -> torch.Tensor:
        labels = torch.tensor([data["train"].labels[i] for i in rows])
        return nn.functional.cross_entropy(head(feats.stacked(kind, "train", rows)), labels)

    def logits(split: str) -> torch.Tensor:
        with torch.no_grad():
            return head(feats.stacked(kind, split, list(range(len(data[split].ids)))))

    extra = statistics.median(feats.forward_s)
    return Contender(params, loss, logits, [head], extra, parts={"head": sum(p.numel() for p in params)})
