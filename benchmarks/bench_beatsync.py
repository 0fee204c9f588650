"""Beat-sync speed and accuracy: 3 minutes of 32 kHz stereo, bar-by-bar WSOLA vs one plain WSOLA call.

    .venv/bin/python benchmarks/bench_beatsync.py [--minutes 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pytsmod

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the synthetic song lives in the tests

from remixer.beatsync import plan_sync, sync_to_downbeats
from tests.test_beatsync import SR, instrumental, onset_errors, warped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=3.0)
    args = parser.parse_args()
    seconds = args.minutes * 60
    generated = np.arange(0.5, seconds - 0.5, 2.0)
    targets = warped(generated, 1.04, 0.02, 0.3)
    targets = targets[targets < seconds - 0.2]
    audio = instrumental(generated, seconds)

    start = time.perf_counter()
    ours = sync_to_downbeats(audio, SR, generated, targets, bpm=120)
    t_ours = time.perf_counter() - start

    n = audio.shape[1]
    anchors = np.round(plan_sync(generated, targets, bpm=120).anchors * SR)
    full = np.concatenate([[[0], [0]], anchors, [[n - 1], [n - 1]]], axis=1)
    start = time.perf_counter()
    plain = pytsmod.wsola(audio, full)[:, :n]
    t_plain = time.perf_counter() - start

    print(f"beat-sync on {args.minutes:g} min of 32 kHz stereo, {len(targets)} bars, tempo 4% off, drifting")
    print("| method | seconds | downbeat error median (ms) | max (ms) |")
    print("|---|---|---|---|")
    for name, out, secs in (("bar-by-bar WSOLA (ours)", ours, t_ours), ("one WSOLA call (pytsmod)", plain, t_plain)):
        errors = np.abs(onset_errors(out, targets)) * 1000
        print(f"| {name} | {secs:.2f} | {np.nanmedian(errors):.2f} | {np.nanmax(errors):.2f} |")


if __name__ == "__main__":
    main()
