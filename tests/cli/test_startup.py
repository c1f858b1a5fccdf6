"""`prefixtune --help` loads neither torch nor transformers (issue 11, item 6). How long it takes is measured
by bench/cli_startup.py, not asserted here."""

from __future__ import annotations

import subprocess
import sys

from prefixtune.cli.export_kv import PACK_DTYPES

PROBE = """
import sys, runpy
sys.argv = ["prefixtune", *sys.argv[1:]]
try:
    runpy.run_module("prefixtune.cli.main", run_name="__main__")
except SystemExit:
    pass
heavy = [m for m in ("torch", "transformers", "safetensors", "accelerate") if m in sys.modules]
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


def test_help_imports_no_model_framework():
    for argv in (["--help"], ["train", "--help"], ["doctor", "--help"], ["convert", "--help"]):
        done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
        assert "examples:" in done.stdout or "COMMAND" in done.stdout
        assert done.stderr.strip().endswith("HEAVY="), (argv, done.stderr[-300:])


def test_export_kv_offers_exactly_the_pack_dtypes():
    from prefixtune.io.kv_pack import DTYPES

    assert tuple(sorted(DTYPES)) == PACK_DTYPES
