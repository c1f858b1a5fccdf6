"""Evaluation metrics: classification by scoring verbalizer options, and text metrics for generation.

One job: numbers from predictions. `score_options` turns a logits function into per-option log-likelihoods
(sum of log p over each option's tokens given the prompt; argmax is the prediction), the rest are plain
functions of predictions and references (one or several per prediction). BLEU and ROUGE come from sacrebleu
and rouge-score, with their settings reported by `generation_metric_settings`. Depends on torch
and `train.collate`; knows nothing of adapters (the logits function hides them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from prefixtune.train.collate import pad_prompts

LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (ids, mask) (B, T) -> logits (B, T, V)


def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


@torch.no_grad()
def score_options(
    logits_fn: LogitsFn,
    prompts: Sequence[Sequence[int]],
    options: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    batch_size: int = 16,
) -> torch.Tensor:
    """Log-likelihood of every option after every prompt.

    Rows are left-padded so every option ends at the last position. When every option is one token, one
    forward pass of the prompts suffices (causal attention makes that exact); otherwise each option is
    appended and scored in its own pass. Prompts are batched by length to limit padding.

    Args:
        logits_fn: maps `(input_ids, attention_mask)` (B, T) to logits (B, T, V).
        prompts: token ids of each prompt (N lists).
        options: token ids of each option (K non-empty lists), e.g. the tokenized verbalizer words.
        pad_token_id: id for padded positions.
        batch_size: rows per forward pass.

    Returns:
        (N, K) float tensor: sum over the option's tokens of log p(token | prompt, earlier option tokens).
    """
    if not options or any(len(o) == 0 for o in options):
        raise ValueError("every option must have at least one token")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    scores = torch.empty(len(prompts), len(options))
    single = all(len(o) == 1 for o in options)
    first_ids = torch.tensor([o[0] for o in options])
    for rows in _batches(order, batch_size):
        if single:
            batch = pad_prompts([prompts[i] for i in rows], pad_token_id)
            logp = logits_fn(batch["input_ids"], batch["attention_mask"])[:, -1].float().log_softmax(-1)
            scores[rows] = logp[:, first_ids]  # (B, K)
            continue
        for k, option in enumerate(options):
            batch = pad_prompts([list(prompts[i]) + list(option) for i in rows], pad_token_id)
            n = len(option)
            logits = logits_fn(batch["input_ids"], batch["attention_mask"])[:, -n - 1 : -1].float()  # (B, n, V)
            target = torch.tensor(option).expand(len(rows), n)  # (B, n)
            scores[rows, k] = logits.log_softmax(-1).gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1)
    return scores


def accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference."""
    if not references:
        return 0.0
    return sum(p == r for p, r in zip(predictions, references, strict=True)) / len(references)


def macro_f1(predictions: Sequence[str], references: Sequence[str], labels: Sequence[str]) -> float:
    """Unweighted mean over `labels` of the per-label F1 (a label never predicted nor present scores 0)."""
    if not labels:
        return 0.0
    total = 0.0
    for label in labels:
        tp = sum(p == label and r == label for p, r in zip(predictions, references, strict=True))
        fp = sum(p == label and r != label for p, r in zip(predictions, references, strict=True))
        fn = sum(p != label and r == label for p, r in zip(predictions, references, strict=True))
        total += 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return total / len(labels)


# ----- generation metrics: one or several references per prediction ------------------------------------
# E2E, WebNLG and CommonGen report corpus BLEU against every reference of an input (sacrebleu's multi-reference
# mode) and ROUGE-L against the best-matching reference; a plain string is one reference.
References = Sequence[str | Sequence[str]]
ROUGE_SETTINGS = "rouge-score {version}, rougeL F-measure, use_stemmer=True, best reference per example, mean"


def reference_lists(references: References) -> list[list[str]]:
    """Each prediction's references as a list (a string is a list of one)."""
    return [[r] if isinstance(r, str) else list(r) for r in references]


def exact_match(predictions: Sequence[str], references: References) -> float:
    """Share of predictions equal to one of their references, after stripping surrounding whitespace."""
    if not references:
        return 0.0
    pairs = zip(predictions, reference_lists(references), strict=True)
    return sum(p.strip() in {r.strip() for r in refs} for p, refs in pairs) / len(references)


def _bleu(predictions: Sequence[str], references: References):  # -> (sacrebleu BLEUScore, BLEU metric)
    from sacrebleu.metrics import BLEU

    refs = reference_lists(references)
    if len(refs) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(refs)} reference sets")
    K = max((len(r) for r in refs), default=1)
    # sacrebleu takes K reference streams; a segment with fewer references has None in the others.
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(K)]
    metric = BLEU()  # sacrebleu's defaults: 13a tokenization, mixed case, exponential smoothing
    return metric.corpus_score(list(predictions), streams), metric


def bleu(predictions: Sequence[str], references: References) -> float:
    """Corpus BLEU (sacrebleu defaults, every reference of each prediction), 0-100."""
    return float(_bleu(predictions, references)[0].score)


def rouge_l(predictions: Sequence[str], references: References) -> float:
    """Mean over predictions of the ROUGE-L F-measure against the best reference (rouge-score, stemming), 0-1."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    if not references:
        return 0.0
    pairs = zip(reference_lists(references), predictions, strict=True)
    return sum(scorer.score_multi(refs, p)["rougeL"].fmeasure for refs, p in pairs) / len(references)


def generation_metrics(predictions: Sequence[str], references: References) -> dict[str, float]:
    """Exact match, BLEU and ROUGE-L of generated texts (each against all of its references)."""
    refs = reference_lists(references)
    return {
        "exact_match": exact_match(predictions, refs),
        "bleu": bleu(predictions, refs),
        "rougeL": rouge_l(predictions, refs),
    }


def generation_metric_settings(predictions: Sequence[str], references: References) -> dict[str, str]:
    """How `generation_metrics` computed BLEU and ROUGE-L, to print beside the numbers.

    BLEU gets sacrebleu's signature (`nrefs:var|case:mixed|eff:no|tok:13a|smooth:exp|version:...`), the
    string papers quote so that scores are comparable.
    """
    from importlib.metadata import version

    _, metric = _bleu(predictions, references)
    return {"bleu": str(metric.get_signature()), "rougeL": ROUGE_SETTINGS.format(version=version("rouge-score"))}
