"""The rhythm stage, both trackers side by side, in seconds per minute of audio.

    .venv/bin/python benchmarks/bench_rhythm.py [--song PATH] [--repeat 1] [--device cpu]

All-In-One: the 8-fold ensemble at its real size with random weights (its time does not depend on the
weights), fed the song's mix as each of its four stems (its time does not depend on what they hold).
madmom: the real networks on the real mix, its time split into the networks and the bar tracker, the bar
tracker timed with our compiled Viterbi and with madmom-infer's numpy one (the same paths: tests/test_beats.py).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from remixer import audio, rhythm, weights
from remixer.device import pick_device
from remixer.testing import rhythm as rhythm_writers

SONG = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "songs" / "vibe_ace.ogg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--song", type=Path, default=SONG)
    parser.add_argument("--repeat", type=int, default=1, help="the song this many times end to end")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    song = audio.decode(args.song)
    samples = np.concatenate([song.samples] * args.repeat, axis=1)
    rate = song.sample_rate
    minutes = samples.shape[1] / rate / 60
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        rhythm_writers.write_random_checkpoints(tmp)
        analyzer = rhythm.load_analyzer(rhythm_writers.folds_in(tmp), device)
        tracker = rhythm.load_tracker(weights.paths_of("madmom", tmp, offline=True))
    import soxr

    at_44k = samples if rate == rhythm.SAMPLE_RATE else soxr.resample(samples.T, rate, rhythm.SAMPLE_RATE).T
    stems = {name: np.ascontiguousarray(at_44k, dtype=np.float32) for name in ("bass", "drums", "other", "vocals")}
    tracker.analyze_mix(samples[:, :rate * 5], rate)  # compiles the Viterbi once, as setup would

    rows = []
    start = time.perf_counter()
    analyzer.analyze(stems)
    rows.append(("All-In-One (8 folds, real size), from its stems", time.perf_counter() - start))
    start = time.perf_counter()
    found = tracker.analyze_mix(samples, rate)
    rows.append(("madmom (networks + compiled bar tracker), from the mix", time.perf_counter() - start))
    pcm = tracker.pcm(samples, rate)
    start = time.perf_counter()
    activations = tracker.activations.process(pcm)
    rows.append(("  madmom: the 8 networks", time.perf_counter() - start))
    start = time.perf_counter()
    tracker.bars.process(activations)
    rows.append(("  madmom: bar tracker, compiled Viterbi", time.perf_counter() - start))
    from madmom_infer.features.downbeats import DBNDownBeatTrackingProcessor

    numpy_bars = DBNDownBeatTrackingProcessor(beats_per_bar=list(rhythm.MADMOM_BEATS_PER_BAR), fps=rhythm.MADMOM_FPS)
    start = time.perf_counter()
    numpy_bars.process(activations)
    rows.append(("  madmom: bar tracker, madmom-infer's numpy Viterbi", time.perf_counter() - start))

    print(f"{args.song.name} x{args.repeat}: {minutes:.2f} min, device {device}, torch threads "
          f"{torch.get_num_threads()}; madmom found {found.bpm} bpm, {len(found.beats)} beats")
    print("| rhythm stage | seconds | seconds per minute of audio |")
    print("|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / minutes:.1f} |")
    print(f"All-In-One / madmom per minute: {rows[0][1] / rows[1][1]:.1f}x")


if __name__ == "__main__":
    main()
