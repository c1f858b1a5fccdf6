"""Quality benchmark: our prefix / kv / prompt adapters vs PEFT prefix tuning and prompt tuning.

    PYTHONPATH=src .venv/bin/python bench/quality.py --steps 100 --test-limit 500 --out bench/RESULTS-quality.md

Same model (SmolLM2-135M-Instruct), same Rotten Tomatoes split, same batches (a pure function of seed and
step), same optimizer (AdamW, linear decay with 6% warmup), same number of virtual tokens and steps; the
learning rate is per method (the best of a small sweep, see --lrs). Accuracy is scored by forward passes
only (log p of " positive" vs " negative" after the prompt), because PEFT's `generate` ignores prefix
adapters with transformers 5.x (DESIGN.md §5). Reports test accuracy, trainable parameters, seconds per step.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import get_scheduler

import prefixtune as pt
from prefixtune.models import load_model
from prefixtune.train.collate import Collator
from prefixtune.train.data import SkipReport, encode_examples, encode_prompt, parse_records
from prefixtune.train.datasets import builtin_format, load_records
from prefixtune.train.evaluate import generate_texts
from prefixtune.train.loop import batch_rows
from prefixtune.train.metrics import accuracy, generation_metrics, score_options

DEFAULT_LRS = {
    "ours-prefix": [1e-3, 3e-3],
    "ours-kv": [1e-3, 3e-3],
    "ours-prompt": [3e-3, 1e-2],
    "peft-prefix": [5e-3, 2e-2],
    "peft-prompt": [3e-3, 1e-2],
}
GEN_MAX_NEW_TOKENS = 40  # WordNet definitions: median 8 words, 95% under 25
# Each method starts from its best initialization: ours from the activations of this two-shot text (as
# `make demo`), PEFT prompt tuning from the same text's embeddings (PromptTuningInit.TEXT); PEFT prefix tuning
# offers only random initialization. m is the text's token count for every method.
INIT_TEXT = (
    "Review: an utterly charming and hilarious film.\nSentiment: positive\n"
    "Review: a tedious, poorly acted mess.\nSentiment: negative\n"
)


@dataclass
class Contender:
    """A method under test: its trainable parameters, a training loss and a logits function."""

    params: list[torch.nn.Parameter]
    loss: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    # Per-parameter multipliers of each optimizer update (None: plain AdamW): the `scaled` lever.
    update_scales: list[torch.Tensor] | None = None
    # Greedy continuations of token-id prompts (generation tasks); None: the method cannot generate here.
    generate: Callable[[list[list[int]]], list[str]] | None = None
    # Our adapter module (ours only): what a lever wraps.
    params_owner: torch.nn.Module | None = None


def ours(method: str, m: int, seed: int, init_text: str = INIT_TEXT, **overrides: object) -> Contender:
    """Our adapter `method` with m virtual tokens, initialized from the activations of `init_text`;
    `overrides` replace PrefixConfig fields (the quality levers: init, reparam_hidden, ...)."""
    model, tok = load_model("smollm2-135m")
    fields = {"init": "text", "init_text": init_text, **overrides}
    if fields["init"] != "text":
        fields["init_text"] = None
    config = pt.PrefixConfig(method=method, num_virtual_tokens=m, seed=seed, **fields)
    pm = pt.attach(model, config, tokenizer=tok)
    return Contender(
        params=pm.trainable_parameters(),
        loss=lambda b: pm(**b, adapter_names=["default"] * b["input_ids"].shape[0]).loss,
        logits=lambda ids, mask: pm(input_ids=ids, attention_mask=mask, adapter_names=["default"] * len(ids)).logits,
        generate=lambda prompts: _greedy(pm, tok, prompts, "default"),
        params_owner=pm.get_adapter("default"),
    )


def _greedy(model: torch.nn.Module, tok: object, prompts: list[list[int]], adapter: str | None) -> list[str]:
    """The library's evaluation decoding (greedy, left-padded batches, KV cache) for any contender."""
    return generate_texts(model, tok, prompts, adapter, batch_size=16, max_new_tokens=GEN_MAX_NEW_TOKENS)


def ours_scaled(method: str, m: int, seed: int, init_text: str = INIT_TEXT) -> Contender:
    """Our adapter with every update multiplied by its vector's initial RMS: AdamW on P / rms(P_0), so each
    layer's prefix moves by the same share of its own scale. SmolLM2's hidden states differ in scale by layer
    and position (median RMS about 7, some positions above 10^4), keys/values much less (RMS 1.4-2.2)."""
    contender = ours(method, m, seed, init_text)
    contender.update_scales = [p.detach().float().pow(2).mean(-1, keepdim=True).sqrt() for p in contender.params]
    return contender


def ours_dropout(method: str, m: int, seed: int, init_text: str = INIT_TEXT, p: float = 0.1) -> Contender:
    """Our adapter with dropout on its per-layer keys and values in training forwards (P-tuning v2 applies
    its hidden dropout, 0.1, to the prefix's past_key_values); scoring (under no_grad) sees them whole."""
    contender = ours(method, m, seed, init_text)
    adapter = contender.params_owner
    undropped = adapter.layer_tensors

    def dropped() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        keys, values = undropped()
        if not torch.is_grad_enabled():
            return keys, values
        drop = torch.nn.functional.dropout
        return [drop(k, p) for k in keys], [drop(v, p) for v in values]

    adapter.layer_tensors = dropped
    return contender


def peft_method(method: str, m: int, seed: int, init_text: str = INIT_TEXT) -> Contender:
    """PEFT prefix tuning (random init, its only option) or prompt tuning (from `init_text`'s embeddings)."""
    from peft import PrefixTuningConfig, PromptTuningConfig, PromptTuningInit, get_peft_model

    from prefixtune.models import BUILTIN_MODELS, cache_dir

    torch.manual_seed(seed)
    model, _ = load_model("smollm2-135m")
    if method == "prefix":
        config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=m)
    else:
        local = cache_dir() / "models" / BUILTIN_MODELS["smollm2-135m"].cache_key  # the loader's cached copy
        config = PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=m,
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text=init_text,
            tokenizer_name_or_path=str(local),
        )
    # PEFT's `generate` ignores prefix adapters with transformers 5.x (DESIGN.md section 5): no generate here.
    return _peft_contender(get_peft_model(model, config))


def peft_lora(rank: int, seed: int, init_text: str = "") -> Contender:
    """PEFT LoRA of rank `rank` on q/k/v/o (alpha = 2 rank, no dropout); `init_text` is unused."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model, _ = load_model("smollm2-135m")
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
    )
    peft_model = get_peft_model(model, config)
    contender = _peft_contender(peft_model)
    # LoRA lives inside the wrapped transformers model's layers, so that model generates with it as usual.
    _, tok = load_model("smollm2-135m")
    contender.generate = lambda prompts: _greedy(peft_model.get_base_model(), tok, prompts, None)
    return contender


def ptplus(rank: int, seed: int, init_text: str = "") -> Contender:
    """The Prefix-Tuning+-style query memory of rank `rank` (bench/ptplus.py); `init_text` is unused."""
    from ptplus import attach_ptplus

    model, tok, params = attach_ptplus(rank, seed)
    return Contender(
        params=params,
        loss=lambda b: model(**b).loss,
        logits=lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits,
        generate=lambda prompts: _greedy(model, tok, prompts, None),
    )


def _peft_contender(peft_model: torch.nn.Module) -> Contender:
    return Contender(
        params=[p for p in peft_model.parameters() if p.requires_grad],
        loss=lambda b: peft_model(**b).loss,
        logits=lambda ids, mask: peft_model(input_ids=ids, attention_mask=mask).logits,
    )


# name -> (size, seed, init text) -> Contender; size is m, or the rank for LoRA.
BUILDERS: dict[str, Callable[[int, int, str], Contender]] = {
    "ours-prefix": lambda m, s, text: ours("prefix", m, s, text),
    "ours-kv": lambda m, s, text: ours("kv", m, s, text),
    "ours-prompt": lambda m, s, text: ours("prompt", m, s, text),
    "peft-prefix": lambda m, s, text: peft_method("prefix", m, s, text),
    "peft-prompt": lambda m, s, text: peft_method("prompt", m, s, text),
    "peft-lora": lambda r, s, text: peft_lora(r, s, text),
    "ptplus": lambda r, s, text: ptplus(r, s, text),
    # Levers on our `prefix` (issue 14): the same size, one change each.
    "ours-prefix-mlp": lambda m, s, text: ours("prefix", m, s, text, reparam_hidden=512),
    "ours-prefix-vocab": lambda m, s, text: ours("prefix", m, s, text, init="vocab"),
    "ours-prefix-random": lambda m, s, text: ours("prefix", m, s, text, init="random"),
    "ours-prefix-scaled": lambda m, s, text: ours_scaled("prefix", m, s, text),
    # `kv` from random vocabulary tokens (what `attach` without data does; `prefixtune train`'s default
    # before it started from the task text).
    "ours-kv-vocab": lambda m, s, text: ours("kv", m, s, text, init="vocab"),
    # Levers on `kv`: P-tuning v2's dropout (0.1) on the prefix keys/values; a long prefix, m = 128.
    "ours-kv-dropout": lambda m, s, text: ours_dropout("kv", m, s, text),
    "ours-kv-m128": lambda m, s, text: ours("kv", m, s, text),  # the suite's size_for gives 128
    # The suite passes this lever the label words instead of the task text (quality_suite.init_text_for).
    "ours-prefix-labels": lambda m, s, text: ours("prefix", m, s, text),
    # A long prefix at any budget: m = 128 (what it buys, and what it costs per step).
    "ours-prefix-m128": lambda m, s, text: ours("prefix", m, s, text),  # the suite's size_for gives 128
}


def train_and_score(contender: Contender, lr: float, data: dict, steps: int, batch_size: int, seed: int) -> dict:
    """AdamW for `steps` steps (linear decay, 6% warmup, clip 1.0) on seeded batches; accuracy on both splits.

    Returns:
        `params`, `s_per_step`, and `validation` / `test` accuracy (options scored by summed log-likelihood).
    """
    optimizer = torch.optim.AdamW(contender.params, lr=lr)
    scheduler = get_scheduler("linear", optimizer, round(0.06 * steps), steps)
    collate = Collator(data["pad"], "right")
    start, losses = time.perf_counter(), []
    for step in range(steps):
        rows = batch_rows(len(data["train"]), step, batch_size, seed, 0, 1)
        loss = contender.loss(collate([data["train"][i] for i in rows]))
        losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(contender.params, 1.0)
        before = None if contender.update_scales is None else [p.detach().clone() for p in contender.params]
        optimizer.step()
        if before is not None:
            with torch.no_grad():
                for p, p0, scale in zip(contender.params, before, contender.update_scales, strict=True):
                    p.copy_(p0 + (p - p0) * scale)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    result = {"params": sum(p.numel() for p in contender.params), "s_per_step": (time.perf_counter() - start) / steps}
    # Training loss over the first and last tenth of the steps: is a row under- or over-fitting?
    tenth = max(1, steps // 10)
    result["train_loss_first"] = sum(losses[:tenth]) / tenth
    result["train_loss_last"] = sum(losses[-tenth:]) / tenth
    if data["kind"] == "generation":
        return result | _score_generation(contender, data)
    with torch.no_grad():
        for split in ("validation", "test"):
            scores = score_options(contender.logits, data[split]["prompts"], data["options"], pad_token_id=data["pad"])
            predictions = [data["labels"][i] for i in scores.argmax(-1).tolist()]
            result[split] = accuracy(predictions, data[split]["gold"])
    # Which test examples were right, in split order ("1"/"0"): methods compared example by example (by
    # prompt length, bench/quality_by_length.py) on the same seed.
    result["test_correct"] = "".join(str(int(p == g)) for p, g in zip(predictions, data["test"]["gold"], strict=True))
    return result


def _score_generation(contender: Contender, data: dict) -> dict:
    """Greedy definitions of both splits: `validation` / `test` hold BLEU / 100 (sacrebleu, every reference),
    `*_rougeL` the mean best-reference ROUGE-L; the first test predictions are kept for reading."""
    if contender.generate is None:
        raise ValueError("this method cannot generate here (PEFT prefix/prompt tuning: see peft_method)")
    out: dict = {"metric": "bleu"}
    with torch.no_grad():
        for split in ("validation", "test"):
            predictions = contender.generate(data[split]["prompts"])
            scores = generation_metrics(predictions, data[split]["references"])
            out[split], out[f"{split}_rougeL"] = scores["bleu"] / 100, scores["rougeL"]
    out["test_samples"] = predictions[:5]
    return out


def run_one(name: str, lr: float, args: argparse.Namespace, data: dict) -> dict:
    """Train one contender for `args.steps` steps and score it on the validation and test prompts."""
    contender = BUILDERS[name](args.num_virtual_tokens, args.seed, INIT_TEXT)
    result = {"method": name, "lr": lr, **train_and_score(contender, lr, data, args.steps, args.batch_size, args.seed)}
    print(json.dumps(result), flush=True)
    return result


def load_task(dataset: str, val_limit: int | None, test_limit: int | None, max_length: int = 96) -> dict:
    """A built-in task encoded for SmolLM2: train ids with loss labels (training examples over `max_length`
    are skipped) and the prompts of the validation and test splits; for classification also their gold labels
    and the options' ids, for generation (a completion task) every reference of each prompt."""
    _, tok = load_model("smollm2-135m")
    fmt = builtin_format(dataset)
    assert fmt is not None, f"{dataset} is not a built-in dataset"
    generation = fmt.kind == "completion"
    train = parse_records(load_records(dataset, "train"), fmt, tok)
    data = {"kind": "generation" if generation else "classification", "format": fmt, "train_examples": train}
    data |= {"pad": tok.pad_token_id, "train": encode_examples(train, tok, max_length, skips=SkipReport())}
    if not generation:
        data["labels"] = fmt.labels
        data["options"] = [tok(fmt.verbalizer[label], add_special_tokens=False)["input_ids"] for label in fmt.labels]
    for split, limit in (("validation", val_limit), ("test", test_limit)):
        examples = parse_records(load_records(dataset, split, limit), fmt, tok)
        data[split] = {"prompts": [encode_prompt(e, tok) for e in examples]}
        if generation:
            data[split]["references"] = [list(e.references) for e in examples]
        else:
            data[split]["gold"] = [e.label for e in examples]
    return data


def load_data(args: argparse.Namespace) -> dict:
    return load_task("rotten-tomatoes", args.val_limit, args.test_limit)


def write_markdown(results: list[dict], args: argparse.Namespace, command: str) -> str:
    best: dict[str, dict] = {}
    for r in results:  # the learning rate is picked on validation accuracy, never on test
        if r["method"] not in best or r["validation"] > best[r["method"]]["validation"]:
            best[r["method"]] = r
    lines = [
        "# Quality benchmark: prefixtune vs PEFT (Rotten Tomatoes, SmolLM2-135M-Instruct, CPU)",
        "",
        f"Command: `{command}`",
        "",
        "Initialization: ours from the activations of a two-shot text (init='text'), PEFT prompt tuning from "
        "the same text (PromptTuningInit.TEXT), PEFT prefix tuning random (its only option).",
        "",
        f"Same split, batches, optimizer and schedule; m = {args.num_virtual_tokens} virtual tokens, "
        f"{args.steps} steps of batch {args.batch_size}; learning rate chosen per method on validation "
        f"({args.val_limit} examples); test = first {args.test_limit} of the held-out test split.",
        "",
        "| method | lr | trainable params | validation acc | test acc | s/step |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(best.values(), key=lambda r: -r["test"]):
        lines.append(
            f"| {r['method']} | {r['lr']:g} | {r['params']:,} | {r['validation']:.3f} | {r['test']:.3f} | "
            f"{r['s_per_step']:.2f} |"
        )
    lines += ["", "All runs:", "", "```", *[json.dumps(r) for r in results], "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_LRS), choices=list(DEFAULT_LRS))
    parser.add_argument("--lrs", type=json.loads, default=DEFAULT_LRS, help="JSON: method -> list of lrs")
    parser.add_argument("--num-virtual-tokens", type=int, default=30, help="m (default: the init text's 30 tokens)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--val-limit", type=int, default=200)
    parser.add_argument("--test-limit", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the markdown report here")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    data = load_data(args)
    results = [run_one(name, lr, args, data) for name in args.methods for lr in args.lrs[name]]
    import sys

    report = write_markdown(results, args, "PYTHONPATH=src .venv/bin/python bench/quality.py " + " ".join(sys.argv[1:]))
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(report)
    print(report)


if __name__ == "__main__":
    main()
