"""Beat-sync options compared on click tracks and a bass tone: alignment per beat position, bass, speed.

    .venv/bin/python benchmarks/bench_beatsync.py [--minutes 3]

Every option uses the same matched downbeats (tempo 4% off, drifting) and,
except the last row, the same bar-by-bar rendering (each bar starts exactly at
its anchor, bars joined by a 3 ms crossfade); only the stretch inside a bar
differs. Errors are signed (ms): median and 95th percentile of |error| for
downbeats, for the other beats, and for hi-hat eighths; bass is the share of a
55 Hz tone's energy still at 50-60 Hz after the sync.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pytsmod

from remixer import beatsync
from remixer.testing.beats import (
    SR,
    bass_purity,
    click_track,
    expected_positions,
    instrumental,
    signed_errors,
    warped,
)


def pytsmod_stretcher(method):
    """PyTSMod's WSOLA or hptsm as a bar stretcher (the bar's segment, ratio, output length)."""
    def stretch(segment, ratio, out_length):
        anchors = np.array([[0, out_length * ratio], [0, out_length - 1]], dtype=np.float64)
        return np.atleast_2d(method(segment, anchors))[:, :out_length].astype(np.float32)
    return stretch


def one_call(audio, generated, targets):
    n = audio.shape[1]
    anchors = np.round(beatsync.plan_sync(generated, targets, bpm=120).anchors * SR)
    full = np.concatenate([[[0], [0]], anchors, [[n - 1], [n - 1]]], axis=1)
    return pytsmod.wsola(audio, full)[:, :n].astype(np.float32)


def measure(name, sync, generated, targets, seconds):
    beats = click_track(generated, seconds)
    eighths = click_track(generated, seconds, eighths=True)
    bass = instrumental([], seconds, bass=0.3)
    start = time.perf_counter()
    out_beats = sync(beats)
    elapsed = time.perf_counter() - start
    out_eighths, out_bass = sync(eighths), sync(bass)
    quarter = expected_positions(targets, 4)
    eighth = expected_positions(targets, 8)

    def stats(out, positions):
        errors = np.concatenate([signed_errors(out, positions[s]) for s in positions]) * 1000
        errors = errors[np.isfinite(errors)]
        return np.median(errors), np.percentile(np.abs(errors), 95)

    down = stats(out_beats, {0: quarter[0]})
    other = stats(out_beats, {s: quarter[s] for s in (1, 2, 3)})
    hats = stats(out_eighths, {s: eighth[s] for s in range(1, 8, 2)})
    return (name, *down, *other, *hats, bass_purity(out_bass), elapsed / (seconds / 60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    args = parser.parse_args()
    seconds = args.minutes * 60
    generated = np.arange(0.5, seconds - 2.5, 2.0)
    targets = warped(generated, 1.04, 0.02, 0.3)
    keep = targets < seconds - 0.3
    generated, targets = generated[keep], targets[keep]

    def bar_by_bar(stretcher):
        return lambda audio: beatsync.sync_to_downbeats(audio, SR, generated, targets, bpm=120, stretcher=stretcher)

    options = [
        ("bar by bar, own WSOLA (shipped)", bar_by_bar(beatsync.wsola)),
        ("bar by bar, PyTSMod WSOLA (before)", bar_by_bar(pytsmod_stretcher(pytsmod.wsola))),
        ("bar by bar, PyTSMod hptsm", bar_by_bar(pytsmod_stretcher(pytsmod.hptsm))),
        ("one PyTSMod WSOLA call", lambda audio: one_call(audio, generated, targets)),
    ]
    rows = [measure(name, sync, generated, targets, seconds) for name, sync in options]
    print(f"beat-sync, {args.minutes:g} min of 32 kHz stereo, {len(targets)} bars, tempo 4% off, drifting")
    print("| option | downbeats median / p95 (ms) | beats 2-4 median / p95 (ms) | off-beat eighths median / p95 (ms) "
          "| 55 Hz kept | s per minute |")
    print("|---|---|---|---|---|---|")
    for name, dm, dp, bm, bp, hm, hp, bass, speed in rows:
        print(f"| {name} | {dm:+.2f} / {dp:.2f} | {bm:+.2f} / {bp:.2f} | {hm:+.2f} / {hp:.2f} "
              f"| {bass:.3f} | {speed:.2f} |")


if __name__ == "__main__":
    main()
