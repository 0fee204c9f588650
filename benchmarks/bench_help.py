"""How fast the command line answers before any model is needed: `musicgen-remix --help` and
`import remixer.request` in a fresh interpreter (neither may load torch).

    .venv/bin/python benchmarks/bench_help.py [--runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "musicgen-remix --help": [sys.executable, "-m", "remixer", "--help"],
    "musicgen-remix batch --help": [sys.executable, "-m", "remixer", "batch", "--help"],
    "import remixer.request": [sys.executable, "-c", "import remixer.request"],
    "import torch (for scale)": [sys.executable, "-c", "import torch"],
}
CHECK = ("import sys, remixer.cli\ntry:\n    remixer.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
         "print(sorted({'torch', 'transformers'} & set(sys.modules)))")


def wall(command: list[str], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, capture_output=True, check=True)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    loaded = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, check=True)
    libraries = loaded.stdout.strip().splitlines()[-1]
    print(f"\nmodel libraries loaded by --help: {libraries}; {args.runs} runs each, wall seconds")
    print("| command | median | min | max |")
    print("|---|---|---|---|")
    for name, command in CASES.items():
        seconds = wall(command, args.runs)
        print(f"| `{name}` | {statistics.median(seconds):.2f} | {min(seconds):.2f} | {max(seconds):.2f} |")


if __name__ == "__main__":
    main()
