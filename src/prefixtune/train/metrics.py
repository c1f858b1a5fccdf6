"""Evaluation metrics: classification by scoring verbalizer options, and text metrics for generation.

One job: numbers from predictions. `score_options` turns a logits function into per-option log-likelihoods
(sum of log p over each option's tokens given the prompt; argmax is the prediction), the rest are plain
functions of predictions and references. BLEU and ROUGE come from sacrebleu and rouge-score. Depends on torch
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


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference after stripping surrounding whitespace."""
    return accuracy([p.strip() for p in predictions], [r.strip() for r in references])


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, default 13a tokenization), 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (rouge-score, with stemming), 0-1."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    if not references:
        return 0.0
    pairs = zip(references, predictions, strict=True)
    return sum(scorer.score(r, p)["rougeL"].fmeasure for r, p in pairs) / len(references)


def generation_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Exact match, BLEU and ROUGE-L of generated texts."""
    return {
        "exact_match": exact_match(predictions, references),
        "bleu": bleu(predictions, references),
        "rougeL": rouge_l(predictions, references),
    }
