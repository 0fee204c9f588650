"""BTC speed: seconds per minute of audio for features and model, full-size random checkpoint.

    .venv/bin/python benchmarks/bench_btc.py [--minutes 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import btc
from remixer.testing import btc as btc_writers


def synthetic_song(minutes: float, sample_rate: int = 44100) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(minutes * 60 * sample_rate)) / sample_rate
    roots = 110 * 2 ** (rng.integers(0, 12, size=int(minutes * 30)) / 12)  # a chord every 2 s
    freq = roots[(t // 2).astype(int)]
    song = sum(np.sin(2 * np.pi * freq * ratio * t) for ratio in (1, 1.26, 1.5)) / 3
    return (0.3 * song + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    audio = synthetic_song(args.minutes)
    with tempfile.TemporaryDirectory() as tmp:
        path = btc_writers.write_random_checkpoints(Path(tmp))[0]
        recognizer = btc.load_model(path, args.device)
    start = time.perf_counter()
    features = btc.extract_features(audio, 44100)
    t_features = time.perf_counter() - start
    recognizer.logits(features[:108])  # warm-up
    start = time.perf_counter()
    recognizer.logits(features)
    t_model = time.perf_counter() - start
    print(f"BTC on {args.minutes:g} min of audio ({features.shape[0]} frames), device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print("| stage | seconds | seconds per minute of audio |")
    print("|---|---|---|")
    for name, seconds in (("features (resample + log-CQT)", t_features), ("model (170 classes)", t_model),
                          ("total", t_features + t_model)):
        print(f"| {name} | {seconds:.2f} | {seconds / args.minutes:.2f} |")


if __name__ == "__main__":
    main()
