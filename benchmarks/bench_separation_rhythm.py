"""Separation and rhythm speed at full model size (random weights), with peak memory.

    .venv/bin/python benchmarks/bench_separation_rhythm.py [--minutes 3] [--device cpu]

htdemucs at its real size (26.9 M parameters) and the 8-fold All-In-One
ensemble at its real size; random weights, so only time and memory mean anything.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np
import torch

from remixer import rhythm, separation
from remixer.device import pick_device
from remixer.testing import rhythm as rhythm_writers
from remixer.testing import separation as separation_writers


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    sr = 44100
    rng = np.random.default_rng(0)
    song = (0.1 * rng.standard_normal((2, int(args.minutes * 60 * sr)))).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        separation_writers.write_random_checkpoint(tmp, full_size=True)
        rhythm_writers.write_random_checkpoints(tmp)
        device = pick_device(args.device)
        separator = separation.load_separator(separation_writers.checkpoint_in(tmp), device)
        analyzer = rhythm.load_analyzer(rhythm_writers.folds_in(tmp), device)
    rows = []
    start = time.perf_counter()
    stems = separator.separate(song, sr)
    rows.append(("separation (htdemucs, 26.9 M)", time.perf_counter() - start, peak_rss_gb()))
    start = time.perf_counter()
    analyzer.analyze(stems)
    rows.append(("rhythm (All-In-One, 8 folds)", time.perf_counter() - start, peak_rss_gb()))
    print(f"{args.minutes:g} min stereo song, device {separator.device}, torch threads {torch.get_num_threads()}")
    print("| stage | seconds | seconds per minute of audio | peak RSS so far (GB) |")
    print("|---|---|---|---|")
    for name, seconds, rss in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / args.minutes:.1f} | {rss:.2f} |")


if __name__ == "__main__":
    main()
