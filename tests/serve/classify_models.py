"""A tiny random BERT sequence classifier saved with the character tokenizer, and adapters made on it, for the
/v1/classify tests (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch

import prefixtune as pt
from prefixtune.encoder_forward import encoder_forward
from prefixtune.serve.encoder_loading import load_served_encoder
from tests.encoders.models import make_encoder
from tests.train.conftest import make_tokenizer

LABELS = ("neg", "neu", "pos")
BASE = "tiny-bert"


def save_encoder(directory: Path, head: str = "seq") -> Path:
    """A tiny BERT (`head`: "seq" with LABELS, or "base": no head) with the character tokenizer."""
    model = make_encoder("bert", head, num_labels=len(LABELS))
    if head == "seq":
        with torch.no_grad():  # a head whose output matters (random ones give probabilities ~ 1/C)
            model.classifier.weight.mul_(30)
        model.config.id2label = dict(enumerate(LABELS))
        model.config.label2id = {label: i for i, label in enumerate(LABELS)}
    model.save_pretrained(directory)
    tokenizer = make_tokenizer()
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(directory)
    return directory


def load(directory: Path):
    """(model, tokenizer, has_trained_head) as `prefixtune serve` loads the encoder."""
    return load_served_encoder(str(directory))


def save_classifier_adapter(
    model_dir: Path, path: Path, config: pt.PrefixConfig, *, seed: int = 0, task: dict | None = None
) -> Path:
    """An adapter on the encoder in `model_dir` (with its own perturbed head when `config.train_head`)."""
    model, _, _ = load(model_dir)
    pm = pt.attach(model, config, adapter_name="a")
    if config.train_head:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in pm.get_adapter("a").task_head.parameters():
                p.add_(10 * torch.randn(p.shape, generator=g))
    if task is not None:
        pm.set_adapter_metadata("a", {"task": task})
    pm.save_adapter(path, "a")
    return path


def reference_probs(model_dir: Path, adapter_dir: Path | None, token_ids: list[int]) -> list[float]:
    """The library's `encoder_forward` for one input, alone, on a freshly loaded model: softmax of the logits."""
    model, _, _ = load(model_dir)
    kv, head = None, None
    if adapter_dir is not None:
        pm = pt.load_adapter(model, adapter_dir, adapter_name="ref")
        with torch.no_grad():
            kv = pm.compile("ref").detach()
        head = pm.get_adapter("ref").task_head
    with torch.no_grad():
        out = encoder_forward(model, torch.tensor([token_ids]), prefix_kvs=[kv], heads=[head])
    return out.logits[0].float().softmax(-1).tolist()
