"""The `prefixtune` command: help, exit codes, one-line errors, and train -> eval -> generate -> inspect."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from prefixtune.cli.main import SUBCOMMANDS, main
from tests.train.conftest import write_jsonl


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _commands() -> list[str]:
    from prefixtune.cli.main import build_parser

    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


def test_every_registered_module_adds_a_command():
    assert len(_commands()) == len(SUBCOMMANDS)


@pytest.mark.parametrize("command", _commands())
def test_every_subcommand_has_help_with_examples(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_train_help_states_the_learning_rate_ranges(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "5e-3..1e-2" in out and "5e-5..1e-4" in out and "--num-virtual-tokens" in out


@pytest.mark.parametrize(
    "argv",
    [["train", "--no-such-flag"], ["eval"], ["frobnicate"], ["train", "--batch-size", "many"], []],
)
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


def test_invalid_config_values_exit_2_with_every_problem(capsys, tmp_path):
    code, _, err = _run(
        capsys, "train", "--data", "x.jsonl", "--batch-size", "0", "--schedule", "linear", "--max-steps", "0"
    )
    assert code == 2
    assert "2 problems" in err and "batch_size=0" in err and "max_steps=0" in err
    assert "Traceback" not in err


def test_runtime_errors_exit_1_with_one_line_and_a_hint(capsys, tiny_gpt2_dir, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "label": "x"}, "{oops"])
    code, _, err = _run(capsys, "train", "--model", tiny_gpt2_dir, "--data", bad, "--output-dir", tmp_path / "r")
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[-2].startswith("prefixtune: error: ") and "bad.jsonl:2: not valid JSON" in lines[-2]
    assert lines[-1].startswith("hint: ")
    assert "Traceback" not in err


def test_debug_shows_the_traceback(capsys, tiny_gpt2_dir, tmp_path):
    code, _, err = _run(
        capsys, "--debug", "eval", "--adapter", "none", "--model", tiny_gpt2_dir, "--data", tmp_path / "no.jsonl"
    )
    assert code == 1 and "Traceback" in err


def test_missing_adapter_fails_before_loading_a_model(capsys, tmp_path):
    code, _, err = _run(capsys, "eval", "--adapter", tmp_path / "nope", "--data", "rotten-tomatoes")
    assert code == 1 and "is not a directory" in err


def test_train_eval_generate_inspect_end_to_end(capsys, monkeypatch, tiny_llama_dir, sentiment_files, tmp_path):
    train, valid = sentiment_files
    out = tmp_path / "run"
    code, stdout, _ = _run(
        capsys, "train", "--model", tiny_llama_dir, "--data", train, "--eval-data", valid, "--output-dir", out,
        "--max-steps", "8", "--eval-every", "4", "--batch-size", "4", "--method", "prefix",
        "--num-virtual-tokens", "4", "--learning-rate", "0.02", "--no-progress",
    )  # fmt: skip
    assert code == 0
    assert "training summary" in stdout and "trainable parameters" in stdout and "best validation accuracy" in stdout
    adapter = out / "adapter"

    # eval needs no format flags (the adapter stores them) and no --model (the run's config names it)
    code, stdout, _ = _run(capsys, "eval", "--adapter", adapter, "--data", valid, "--json")
    metrics = json.loads(stdout)
    assert code == 0 and set(metrics) == {"accuracy", "macro_f1", "n"} and metrics["n"] == 16

    code, stdout, _ = _run(capsys, "eval", "--adapter", "none", "--model", tiny_llama_dir, "--data", valid, "--json")
    assert code == 0 and json.loads(stdout)["n"] == 16

    code, stdout, _ = _run(capsys, "generate", "--adapter", adapter, "good ax", "--max-new-tokens", "3")
    assert code == 0 and len(stdout.strip()) > 0

    monkeypatch.setattr(sys, "stdin", io.StringIO("bad by\n"))
    code, stdout, _ = _run(capsys, "generate", "--adapter", adapter, "--max-new-tokens", "3", "--raw")
    assert code == 0 and len(stdout.strip()) > 0

    code, stdout, _ = _run(capsys, "inspect", adapter, "--json")
    info = json.loads(stdout)
    assert code == 0
    assert info["method"] == "prefix" and info["num_virtual_tokens"] == 4 and info["num_layers"] == 3
    assert info["num_parameters"] == 3 * 4 * 32 and len(info["per_layer_norms"]) == 3
    assert info["task"]["kind"] == "classification" and info["position_convention"] == "shifted"
    code, stdout, _ = _run(capsys, "inspect", adapter)
    assert code == 0 and "per-layer norms" in stdout and "injected" in stdout


def test_config_file_then_flags_precedence(capsys, tiny_gpt2_dir, sentiment_files, tmp_path):
    train, valid = sentiment_files
    config = tmp_path / "run.toml"
    config.write_text(
        f'model = "{tiny_gpt2_dir}"\ndata = "{train}"\neval_data = "{valid}"\nmax_steps = 50\nbatch_size = 4\n'
        f'output_dir = "{tmp_path / "run"}"\nprogress = false\n\n[adapter]\nmethod = "kv"\nnum_virtual_tokens = 3\n'
    )
    code, _, _ = _run(capsys, "train", "--config", config, "--max-steps", "2", "--eval-every", "0")
    assert code == 0
    saved = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert saved["train"]["max_steps"] == 2 and saved["train"]["batch_size"] == 4
    assert saved["adapter"]["method"] == "kv" and saved["adapter"]["num_virtual_tokens"] == 3
    config.write_text('max_stepz = 3\ndata = "x"\n')
    code, _, err = _run(capsys, "train", "--config", config)
    assert code == 2 and "max_stepz" in err


def test_console_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "prefixtune.cli.main", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "train" in result.stdout and "demo" in result.stdout


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[2].joinpath("configs").glob("*.toml")), ids=str)
def test_shipped_configs_are_valid(path):
    from prefixtune.cli.main import build_parser
    from prefixtune.cli.train import build_configs

    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# prefixtune train --config"), "configs begin with the command that runs them"
    args = build_parser().parse_args(["train", "--config", str(path), "--data", "some.jsonl"])
    train, adapter = build_configs(args)
    assert train.data == "some.jsonl" and adapter.method in ("prefix", "kv", "prompt")
