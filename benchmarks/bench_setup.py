"""Cold start: what `Predictor.setup()` spends per component with full-size random weights on disk.

    .venv/bin/python benchmarks/bench_setup.py [--dir DIR]

Writes the full-size weights once (htdemucs, All-In-One 8 folds, BTC, T5-base,
EnCodec 32 kHz, MusicGen-Chord medium as a 5.6 GB published-layout .th; the
benchmark's writers), then runs the predictor's setup twice in fresh
processes: the first start converts the .th to the transformers layout (once
per file), later starts read the converted safetensors. Downloads are not
part of this (see bench_download.py for the transfer itself).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETUP = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
from remixer.pipeline import Remixer
start = time.perf_counter()
remixer = Remixer(sys.argv[1], "cpu", offline=True)
remixer.load_version("chord")
remixer.log_setup()
print(f"setup wall time {time.perf_counter() - start:.1f} s")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="weights folder to (re)use; default a temporary one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir or tmp)
        if not (root / "musicgen" / "musicgen-chord.th").exists() or not args.dir:
            from bench_pipeline import write_full_weights

            start = time.perf_counter()
            write_full_weights(root)
            print(f"full-size weights written in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        for label in ("first start (converts the .th once)", "later start (converted cache)"):
            done = subprocess.run([sys.executable, "-c", SETUP, str(root)], capture_output=True, text=True,
                                  env={**os.environ, "REMIXER_OFFLINE": "1"})
            table = [line for line in done.stderr.splitlines() if line.startswith(("setup:", "  "))]
            print(f"## {label}")
            print("\n".join(table[-12:]))
            print(done.stdout.strip())


if __name__ == "__main__":
    main()
