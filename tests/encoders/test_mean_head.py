"""`PrefixConfig(train_head=True, head_pooling="mean")`: the adapter's own fresh Linear(d, num_labels) on the
mean of the real tokens' last hidden states, instead of the model's pooler + classifier (sentence-transformers
encoders such as all-MiniLM-L6-v2 are trained for mean pooling)."""

from __future__ import annotations

import json

import pytest
import torch

import prefixtune as pt
from prefixtune.cli.inspect import _text, describe
from prefixtune.cli.main import main
from prefixtune.core.reference_encoder import reference_encoder_output
from prefixtune.diagnostics import run_doctor
from prefixtune.errors import AdapterFormatError, ConfigError
from tests.conftest import batch
from tests.encoders.models import FAMILIES, make_encoder
from tests.encoders.test_heads import _with_new_head
from tests.encoders.test_training import tiny_bert_dir  # noqa: F401  (a fixture)
from tests.train.conftest import sentiment_rows, write_jsonl


def _mean(**kw) -> pt.PrefixConfig:
    options = {"num_virtual_tokens": 4, "init": "random", "seed": 0, **kw}
    return pt.PrefixConfig(**options, train_head=True, head_pooling="mean")


def _right_padded(B: int = 3, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    ids, _ = batch(B=B, n=n)
    lengths = [n, n - 3, 2][:B]
    mask = torch.tensor([[1] * k + [0] * (n - k) for k in lengths])
    return ids, mask


def _by_hand(hidden: torch.Tensor, mask: torch.Tensor, head: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean of each row's real-token states, then weight @ x + bias, row by row."""
    rows = [hidden[r, mask[r].bool()].mean(0) for r in range(hidden.shape[0])]
    return torch.stack(rows) @ head["mean_head.weight"].T + head["mean_head.bias"]


@pytest.mark.parametrize("method", ["prefix", "kv", "prompt"])
def test_mean_head_equals_mean_pool_and_linear_by_hand(method: str) -> None:
    model = make_encoder("bert", "seq")
    config = _mean(method=method)
    if method != "prompt":
        config = config.replace(position_convention="unshifted")
    pm = pt.attach(model, config)
    adapter = pm.get_adapter()
    with torch.no_grad():  # a head whose output matters
        for p in adapter.task_head.parameters():
            p.mul_(20)
    ids, mask = _right_padded()
    prefix = {  # the literal path on the bare encoder: last hidden states of the real tokens only
        "prefix": lambda: {"layer_prefixes": adapter.states()},
        "kv": lambda: {"layer_kv_prefixes": adapter.layer_tensors()},
        "prompt": lambda: {"prompt": adapter.prompt},
    }[method]()
    with torch.no_grad():
        hidden = reference_encoder_output(
            model.base_model, ids, mask, position_convention=config.position_convention, **prefix
        )
        expected = _by_hand(hidden, mask, adapter.task_head.state())
        got = pm(input_ids=ids, attention_mask=mask).logits
        assert got.shape == (3, 3)
        assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
        assert torch.allclose(pt.reference_forward(pm, ids, mask), expected, atol=1e-5)  # the literal path's head
        # padding counts for nothing: other ids there give the same logits
        other = ids.masked_fill(mask == 0, 5)
        assert torch.equal(pm(input_ids=other, attention_mask=mask).logits, got)
        # ... and it is not the model's own head
        assert not torch.allclose(got, model(input_ids=ids, attention_mask=mask).logits, atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_batch_of_mean_own_and_model_heads_equals_each_row_alone(family: str) -> None:
    pm = pt.attach(make_encoder(family, "seq"), _mean())
    pm.add_adapter("own", pt.PrefixConfig(method="kv", num_virtual_tokens=2, init="random", seed=1, train_head=True))
    pm.add_adapter("frozen", pt.PrefixConfig(method="prompt", num_virtual_tokens=3, init="random", seed=2))
    pm.add_adapter("mean_prompt", _mean(method="prompt", num_virtual_tokens=2, seed=3))
    ids, mask = batch(B=5, n=9)
    names = ["default", "own", "frozen", None, "mean_prompt"]
    with torch.no_grad():
        mixed = pm(input_ids=ids, attention_mask=mask, adapter_names=names).logits
        for r, name in enumerate(names):
            alone = pm(input_ids=ids[r : r + 1], attention_mask=mask[r : r + 1], adapter_names=[name]).logits
            assert torch.allclose(mixed[r : r + 1], alone, atol=1e-5), name
            if name is not None:
                ref = pt.reference_forward(pm, ids[r : r + 1], mask[r : r + 1], adapter_name=name)
                assert torch.allclose(alone, ref, atol=1e-4), name


def test_save_load_round_trip_and_shape_checks(tmp_path) -> None:
    pm = pt.attach(make_encoder("bert", "seq"), _mean(method="prefix", position_convention="unshifted"))
    assert pm.trainable_parts() == {"prefix": 2 * 4 * 32, "head": 3 * 32 + 3}
    path = pm.save_adapter(tmp_path / "a")
    assert sorted(p.name for p in path.iterdir()) == ["adapter.safetensors", "adapter_config.json", "head.safetensors"]
    assert json.loads((path / "adapter_config.json").read_text())["config"]["head_pooling"] == "mean"
    loaded = pt.load_adapter(_with_new_head(make_encoder("bert", "seq"), seed=5), path)  # the model's head: unused
    assert loaded.adapter_config() == pm.adapter_config()
    ids, mask = _right_padded()
    with torch.no_grad():
        assert torch.equal(
            loaded(input_ids=ids, attention_mask=mask).logits, pm(input_ids=ids, attention_mask=mask).logits
        )
    with pytest.raises(AdapterFormatError, match=r"mean_head.bias.* has shape \(3,\), but this model.s is \(2,\)"):
        pt.load_adapter(make_encoder("bert", "seq", num_labels=2), path)  # another number of labels
    # an adapter with a copy of the model's head writes no head_pooling, and one without the key loads as "model"
    model_head = pt.attach(make_encoder("bert", "seq"), pt.PrefixConfig(num_virtual_tokens=2, train_head=True))
    old = model_head.save_adapter(tmp_path / "old")
    assert "head_pooling" not in json.loads((old / "adapter_config.json").read_text())["config"]
    assert pt.load_adapter(make_encoder("bert", "seq"), old).adapter_config().head_pooling == "model"


def test_training_lowers_the_loss_and_leaves_the_base_bit_identical() -> None:
    model = make_encoder("bert", "seq", num_labels=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pm = pt.attach(model, _mean())
    ids, mask = _right_padded(B=3)
    labels = torch.tensor([0, 1, 0])
    optimizer = torch.optim.Adam(pm.trainable_parameters(), lr=5e-2)
    losses = []
    for _ in range(15):
        loss = pm(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    head_ids = {id(p) for p in pm.get_adapter().task_head.parameters()}
    assert head_ids <= {id(p) for p in pm.trainable_parameters()}


def test_bad_configurations_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="set train_head=True"):
        pt.PrefixConfig(head_pooling="mean")
    with pytest.raises(ConfigError, match="head_pooling='cls' is unknown"):
        pt.PrefixConfig(train_head=True, head_pooling="cls")
    with pytest.raises(ConfigError, match=r"sequence-classification head.*BertForTokenClassification"):
        pt.attach(make_encoder("bert", "tok"), _mean())


def test_inspect_and_doctor(tmp_path) -> None:
    pm = pt.attach(make_encoder("bert", "seq", num_labels=5), _mean(method="prefix", num_virtual_tokens=3))
    path = pm.save_adapter(tmp_path / "a")
    info = describe(str(path))
    assert info["parameters_by_part"] == {"prefix": 2 * 3 * 32, "head": 5 * 32 + 5}
    assert info["head_pooling"] == "mean" and info["head"] == {"mean_head.bias": [5], "mean_head.weight": [5, 32]}
    assert "357 (prefix 192, head 165)" in _text(info) and "mean of the real tokens" in _text(info)
    assert run_doctor(make_encoder("bert", "seq", num_labels=5), path).is_healthy
    for model in (make_encoder("bert", "base"), make_encoder("bert", "seq", num_labels=2)):
        assert [f.code for f in run_doctor(model, path).findings] == ["head_mismatch"]


def test_cli_train_with_a_mean_head(tiny_bert_dir, tmp_path, capsys) -> None:  # noqa: F811
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(16, seed=0))
    argv = ["train", "--model", tiny_bert_dir, "--data", train, "--eval-data", train, "--output-dir", tmp_path / "r"]
    argv += ["--max-steps", "4", "--eval-every", "2", "--num-virtual-tokens", "2", "--no-progress"]
    argv += ["--train-head", "--head-pooling", "mean"]
    assert main([str(a) for a in argv]) == 0
    assert "best validation accuracy" in capsys.readouterr().out
    adapter = tmp_path / "r" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["config"]["head_pooling"] == "mean"
    assert describe(str(adapter))["head"] == {"mean_head.bias": [2], "mean_head.weight": [2, 32]}
