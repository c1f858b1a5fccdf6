"""`PrefixModel` inside Hugging Face `Trainer` and TRL's `SFTTrainer` (issue 13, part 2), on a tiny Llama.

What a PeftModel user expects: only the prefix is optimized, gradient checkpointing works, `save_model`
writes an adapter directory (no base weights) that loads into a fresh base model and equals the trained
adapter, evaluation runs, and a run resumed from a Trainer checkpoint ends where the uninterrupted one does.
"""

from __future__ import annotations

import pytest
import torch
from transformers import DataCollatorForLanguageModeling, TrainingArguments

import prefixtune as pt
from prefixtune.integrations.hf_trainer import PrefixTrainer, prefix_sft_trainer_class
from tests.conftest import make_model
from tests.train.conftest import make_tokenizer

ADAPTER = pt.PrefixConfig(method="prefix", num_virtual_tokens=4, seed=0)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tokenizer():
    tok = make_tokenizer()
    tok.padding_side = "right"
    return tok


def _dataset(tok) -> list[dict[str, list[int]]]:
    texts = [f"{i}: " + "abc"[: 1 + i % 3] * (1 + i % 4) for i in range(32)]
    return [{"input_ids": tok(t)["input_ids"]} for t in texts]


def _args(out, **changes) -> TrainingArguments:
    base = dict(
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=3e-2,
        save_steps=2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    return TrainingArguments(str(out), **{**base, **changes})


def _train(out, resume_from=None, **changes):
    tok = _tokenizer()
    pm = pt.attach(make_model("llama"), ADAPTER, tokenizer=tok)
    data = _dataset(tok)
    trainer = PrefixTrainer(
        pm,
        _args(out, **changes),
        train_dataset=data,
        eval_dataset=data[:8],
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
        processing_class=tok,
    )
    trainer.train(resume_from_checkpoint=resume_from)
    return trainer, pm


def _trained(pm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in pm.adapters[pm.active_adapter].folded_state().items()}


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    trainer, pm = _train(out)
    return out, trainer, pm


def test_only_the_prefix_trains_and_save_model_writes_an_adapter(plain_run, tmp_path):
    _, trainer, pm = plain_run
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in pm.trainable_parameters()}
    assert all(torch.equal(v, make_model("llama").state_dict()[k]) for k, v in pm.base_model.state_dict().items())
    trainer.save_model(str(tmp_path / "final"))
    files = {p.name for p in (tmp_path / "final").iterdir()}
    assert {"adapter_config.json", "adapter.safetensors"} <= files
    assert not files & {"model.safetensors", "pytorch_model.bin"}  # never the base weights
    loaded = pt.load_adapter(make_model("llama"), tmp_path / "final")
    for key, value in _trained(pm).items():
        assert torch.equal(loaded.adapters[loaded.active_adapter].folded_state()[key], value)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, pm(ids).logits, atol=1e-6)
    metrics = trainer.evaluate()
    assert torch.isfinite(torch.tensor(metrics["eval_loss"]))


def test_gradient_checkpointing_trains_the_same_adapter(plain_run, tmp_path):
    _, _, pm = plain_run
    _, checkpointed = _train(tmp_path / "gc", gradient_checkpointing=True)
    assert any(getattr(m, "gradient_checkpointing", False) is True for m in checkpointed.base_model.modules())
    for key, value in _trained(pm).items():
        torch.testing.assert_close(_trained(checkpointed)[key], value, rtol=1e-5, atol=1e-6)


def test_resume_from_a_trainer_checkpoint_ends_where_the_uninterrupted_run_does(plain_run, tmp_path):
    out, _, pm = plain_run
    assert (out / "checkpoint-2" / "adapter.safetensors").is_file()
    _, resumed = _train(tmp_path / "resumed", resume_from=str(out / "checkpoint-2"))
    for key, value in _trained(pm).items():
        torch.testing.assert_close(_trained(resumed)[key], value, rtol=1e-5, atol=1e-6)


def test_sft_trainer_trains_the_prefix_and_saves_an_adapter(tmp_path):
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import SFTConfig

    tok = _tokenizer()
    pm = pt.attach(make_model("llama"), ADAPTER, tokenizer=tok)
    before = _trained(pm)
    rows = Dataset.from_list([{"prompt": f"{i}:", "completion": " " + "xyz"[: 1 + i % 3]} for i in range(32)])
    config = SFTConfig(
        str(tmp_path / "sft"), max_steps=3, per_device_train_batch_size=4, learning_rate=3e-2, report_to=[],
        use_cpu=True, save_steps=3, disable_tqdm=True,
    )  # fmt: skip
    trainer = prefix_sft_trainer_class()(pm, config, train_dataset=rows, processing_class=tok)
    trainer.train()
    assert any(not torch.equal(before[k], v) for k, v in _trained(pm).items())
    # TRL's fused LM head scores through the prefix: its loss is the prefix model's, not the bare model's.
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8, 9]]), "labels": torch.tensor([[-100, -100, 7, 8, 9]])}
    with torch.no_grad():
        fused = pm(**batch, fused_lm_head=True).loss
        full = pm(batch["input_ids"], labels=batch["labels"]).loss
        bare = pm(batch["input_ids"], labels=batch["labels"], adapter_names=[None]).loss
    torch.testing.assert_close(fused, full, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fused, bare)
    trainer.save_model(str(tmp_path / "final"))
    loaded = pt.load_adapter(make_model("llama"), tmp_path / "final")
    for key, value in _trained(pm).items():
        assert torch.equal(loaded.adapters[loaded.active_adapter].folded_state()[key], value)
