"""Docs that are executed (issue 11, item 9): every docs/examples/*.py runs on a tiny model; every code block
marked `<!-- example: docs/examples/X.py -->` in README.md and docs/ is X's marked region, word for word; the
README's command lines match the CLI (its `generate` prompt is not templated twice; every --help has examples);
every other Python block is on a short list that says why it cannot run here."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from prefixtune.cli.main import build_parser
from prefixtune.train.datasets import builtin_format

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- example: (docs/examples/\S+\.py)[^>]*-->\n```python\n(.*?)```\n", re.DOTALL)
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if p.name != "example_inputs.py")


def region(script: Path) -> str:
    lines = script.read_text().splitlines()
    start, end = lines.index("# example:start"), lines.index("# example:end")
    return "\n".join(lines[start + 1 : end]) + "\n"


def marked_blocks() -> list[tuple[Path, str, str]]:
    return [(page, name, code) for page in PAGES for name, code in MARKER.findall(page.read_text())]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_example_runs_on_a_tiny_model(script: Path, tiny_llama_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, str(script), str(tiny_llama_dir)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_marked_blocks_are_the_example_files_word_for_word() -> None:
    blocks = marked_blocks()
    assert {name for _, name, _ in blocks} == {f"docs/examples/{s.name}" for s in SCRIPTS}  # each shown somewhere
    for page, name, code in blocks:
        assert code == region(ROOT / name), f"{page.name} shows an outdated copy of {name}"


UNMARKED = re.compile(r"(?<!-->\n)```python\n")
# Pages whose unmarked Python blocks cannot run here, and why (the list must stay exact: see the test).
NOT_EXECUTED = {
    "vllm.md": "talks to a running `vllm serve` (needs vLLM and its OpenAI server)",
    "README.md": "the serving client, a shorter copy of docs/serving.md's, which serving_client.py runs",
}


def test_every_python_block_is_executed_or_listed_with_a_reason() -> None:
    unmarked = {page.name for page in PAGES if UNMARKED.search(page.read_text())}
    assert unmarked == set(NOT_EXECUTED)


def readme_commands(command: str) -> list[list[str]]:
    lines = [line.split("  #")[0] for line in (ROOT / "README.md").read_text().splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith(f"prefixtune {command} ")]


def test_readme_generate_prompts_are_not_templated_twice() -> None:
    # Before: the README passed "Review: ...\nSentiment:", which generate puts into the adapter's template again.
    before, after = builtin_format("rotten-tomatoes").template.split("{text}")
    examples = readme_commands("generate")
    assert examples
    for argv in examples:
        args = build_parser().parse_args(["generate", *argv[1:]])
        if not args.raw:
            assert before.strip() not in args.prompt and after.strip() not in args.prompt, argv


def test_every_help_has_examples() -> None:
    parser = build_parser()
    assert "examples:" in parser.format_help()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        assert "examples:" in sub.format_help(), name
