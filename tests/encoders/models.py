"""Tiny random-weight encoders of each supported family, built from configs (nothing is downloaded)."""

from __future__ import annotations

import torch
import transformers

from tests.conftest import VOCAB

FAMILIES = ("bert", "roberta", "modernbert")
HEADS = ("base", "seq", "tok")
_CLASS = {"base": "Model", "seq": "ForSequenceClassification", "tok": "ForTokenClassification"}
_PREFIX = {"bert": "Bert", "roberta": "Roberta", "modernbert": "ModernBert"}
_SIZE = {"vocab_size": VOCAB, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64}


def encoder_config(family: str, num_labels: int = 3) -> transformers.PretrainedConfig:
    """A tiny config; dropout off so that train-mode forwards are comparable."""
    if family == "modernbert":
        # local_attention=4: a sliding window of 2 slots on every other layer, so windows matter at n=12.
        ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "cls_token_id": 1, "sep_token_id": 2}
        return transformers.ModernBertConfig(
            **_SIZE, **ids, num_hidden_layers=3, max_position_embeddings=64, local_attention=4,
            global_attn_every_n_layers=2, num_labels=num_labels,
        )  # fmt: skip
    cls = transformers.BertConfig if family == "bert" else transformers.RobertaConfig
    extra = {"pad_token_id": 1} if family == "roberta" else {}
    return cls(
        **_SIZE, **extra, num_hidden_layers=2, max_position_embeddings=64, num_labels=num_labels,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip


def make_encoder(family: str, head: str = "seq", attn: str = "sdpa", seed: int = 0, num_labels: int = 3):
    """A tiny encoder of `family` with `head` ("base": AutoModel, "seq", "tok"), in eval mode."""
    torch.manual_seed(seed)
    cls = getattr(transformers, _PREFIX[family] + _CLASS[head])
    model = cls(encoder_config(family, num_labels))
    model.set_attn_implementation(attn)
    return model.eval()


def output_of(out) -> torch.Tensor:
    """Logits of a head, or the last hidden state of a bare encoder."""
    return out.logits if hasattr(out, "logits") else out.last_hidden_state
