"""How long `prefixtune --help` takes, and whether it imports torch or transformers (issue 11, item 6).

Runs `python -m prefixtune.cli.main --help` (and each subcommand's `--help`) in fresh interpreters and reports
wall time and the heavy modules found in `sys.modules` afterwards. A measurement, not a test: timings depend
on the machine. Usage:

    python bench/cli_startup.py            # top level and every subcommand
    python bench/cli_startup.py --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "safetensors", "accelerate", "fastapi", "numpy")
PROBE = (
    "import sys, runpy\n"
    "sys.argv = ['prefixtune', *{argv!r}]\n"
    "try:\n    runpy.run_module('prefixtune.cli.main', run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "print('\\nHEAVY=' + ','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)\n"
)


def measure(argv: list[str], repeats: int) -> dict[str, object]:
    """Median wall seconds of `prefixtune *argv` over `repeats` fresh interpreters, and the heavy modules loaded."""
    code = PROBE.format(argv=argv, heavy=HEAVY)
    times, heavy = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - start)
        heavy = done.stderr.rsplit("HEAVY=", 1)[-1].strip()
    return {"command": " ".join(["prefixtune", *argv]), "seconds": statistics.median(times), "imports": heavy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from prefixtune.cli.main import SUBCOMMANDS

    commands = [["--help"]] + [[name.rsplit(".", 1)[1].replace("_", "-"), "--help"] for name in SUBCOMMANDS]
    rows = [measure(argv, args.repeats) for argv in commands]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print(f"{row['command']:<36} {row['seconds']:6.2f} s   heavy imports: {row['imports'] or 'none'}")


if __name__ == "__main__":
    main()
