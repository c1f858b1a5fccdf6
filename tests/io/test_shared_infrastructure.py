"""One of each piece of infrastructure (issue 11, item 5): atomic writes, safetensors reading, package files,
the task-format merge and the adapter-name rule, each tested once here where every user now goes through it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import prefixtune as pt
from prefixtune.config import is_valid_adapter_name
from prefixtune.errors import AdapterFormatError, CheckpointError, ConfigError, PrefixtuneError
from prefixtune.integrations.hf_trainer import TRAINABLE_FILE, load_prefix_checkpoint
from prefixtune.io.atomic import atomic_directory, atomic_file, remove_stale_temporaries
from prefixtune.io.package_file import locate_package_file
from prefixtune.io.tensor_file import read_safetensors
from prefixtune.serve.errors import AdapterNameError
from prefixtune.serve.registry import validate_name
from prefixtune.train.data import resolve_task_format
from prefixtune.train.formats import TaskFormat
from tests.conftest import make_model


def test_atomic_file_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "pack.bin"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["pack.bin"]
    with atomic_file(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["pack.bin"]


def test_atomic_directory_can_keep_what_another_process_wrote_first(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    with atomic_directory(target, keep_existing=True) as tmp:
        (tmp / "config.json").write_text("ours")
        target.mkdir()  # another process finishes first
        (target / "config.json").write_text("theirs")
    assert (target / "config.json").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_temporaries_left_by_a_crash_are_recognized(tmp_path: Path) -> None:
    with atomic_file(tmp_path / "x.safetensors") as tmp:
        leftover = tmp_path / tmp.name  # what a process killed inside the block leaves behind
        tmp.write_text("done")
    leftover.write_text("partial")
    assert remove_stale_temporaries(tmp_path) == [leftover]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


def test_read_safetensors_gives_tensors_and_metadata_or_a_format_error(tmp_path: Path) -> None:
    file = tmp_path / "t.safetensors"
    save_file({"a": torch.arange(4.0)}, str(file), metadata={"k": "v"})
    tensors, metadata = read_safetensors(file)
    assert torch.equal(tensors["a"], torch.arange(4.0)) and metadata == {"k": "v"}
    file.write_bytes(file.read_bytes()[:20])
    with pytest.raises(AdapterFormatError, match="truncated or corrupt"):
        read_safetensors(file)
    with pytest.raises(AdapterFormatError, match="truncated or corrupt"):
        read_safetensors(tmp_path / "missing.safetensors")


def test_a_truncated_trainer_checkpoint_is_a_checkpoint_error(tmp_path: Path) -> None:
    # Before: safetensors' own SafetensorError escaped (only RuntimeError was caught).
    pm = pt.attach(make_model("gpt2"), pt.PrefixConfig(num_virtual_tokens=2))
    state = {k: v.detach().contiguous() for k, v in pm.adapters["default"].state_dict().items()}
    save_file(state, str(tmp_path / TRAINABLE_FILE))
    load_prefix_checkpoint(pm, tmp_path, None)
    (tmp_path / TRAINABLE_FILE).write_bytes((tmp_path / TRAINABLE_FILE).read_bytes()[:30])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_prefix_checkpoint(pm, tmp_path, None)


def test_locate_package_file_finds_data_without_importing(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "pt_fake_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (package / "data.bin").write_text("x")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert locate_package_file("pt_fake_pkg", "data.bin", "fake==1", "this test") == package / "data.bin"
    with pytest.raises(PrefixtuneError, match="reinstall with `pip install --force-reinstall --no-deps fake==1`"):
        locate_package_file("pt_fake_pkg", "other.bin", "fake==1", "this test")
    with pytest.raises(PrefixtuneError, match="this test needs the package fake==1, which is not installed"):
        locate_package_file("pt_no_such_pkg", "data.bin", "fake==1", "this test")


RECORDS = [("r", {"text": "good", "label": "pos"}), ("r", {"text": "bad", "label": "neg"})]


def test_task_format_merge_keeps_the_base_unless_flags_override_it() -> None:
    base = TaskFormat(kind="classification", template="Review: {text}\nSentiment:", verbalizer={"pos": " yes"})
    assert resolve_task_format(RECORDS, base) is base
    merged = resolve_task_format(RECORDS, base, template="T: {text} =")
    assert merged.template == "T: {text} =" and merged.verbalizer == {"pos": " yes"}
    inferred = resolve_task_format(RECORDS, None)
    assert inferred.kind == "classification" and inferred.verbalizer == {"neg": " neg", "pos": " pos"}


NAMES = {"default": True, "v1.2": True, "a-b_c": True, "a\n": False, "a..b": False, ".hidden": False, "": False}


@pytest.mark.parametrize("name", NAMES)
def test_one_adapter_name_rule_for_the_library_and_the_server(name: str) -> None:
    # Before: PrefixModel refused "v1.2" (which the server accepts) and accepted "a\n" ("$" matches before "\n").
    assert is_valid_adapter_name(name) is NAMES[name]
    model = make_model("gpt2")
    if NAMES[name]:
        assert validate_name(name) == name
        assert pt.attach(model, pt.PrefixConfig(num_virtual_tokens=2), adapter_name=name).adapter_names == [name]
        return
    with pytest.raises(AdapterNameError):
        validate_name(name)
    with pytest.raises(ConfigError, match="is invalid"):
        pt.attach(model, pt.PrefixConfig(num_virtual_tokens=2), adapter_name=name)
