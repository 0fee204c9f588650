"""`python -m remixer.tiny_weights DIR` makes the landed stages run offline."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from remixer import chords, weights
from remixer.tiny_weights import WRITERS


def test_tiny_weights_cli_writes_loadable_checkpoints(tmp_path, monkeypatch):
    out = subprocess.run([sys.executable, "-m", "remixer.tiny_weights", str(tmp_path)],
                         capture_output=True, text=True, check=True)
    assert "noise" in out.stderr
    written = out.stdout.split()
    assert all((tmp_path / p).exists() for p in written)
    components = ["btc-large-voca", "btc-majmin", "htdemucs", "allin1", "t5", "encodec",
                  "musicgen-chord", "musicgen-chord-large", "musicgen-stereo-chord", "musicgen-stereo-chord-large",
                  "musicongen", "mbd", "madmom"]
    assert len(written) == len(weights.files_of(components)) == 31  # madmom's 8 are its real trained files
    assert sorted(weights.COMPONENTS) == sorted(components)
    assert weights.ensure(components, tmp_path, offline=True) == tmp_path

    monkeypatch.setenv("REMIXER_OFFLINE", "1")
    components = [chords.recognizer_component(True), chords.recognizer_component(False)]
    assert weights.missing(weights.files_of(components), tmp_path) == []
    (large_path,), (small_path,) = (weights.paths_of(c, tmp_path) for c in components)
    large, small = chords.read_recognizer(large_path), chords.read_recognizer(small_path)
    assert len(large.labels) == 170 and len(small.labels) == 25
    segments = large.recognize(np.random.default_rng(0).standard_normal(22050 * 3).astype(np.float32), 22050)
    assert segments[-1].end == 3.0


def test_every_writer_names_a_manifest_component():
    for component in WRITERS:
        assert any(c.startswith(component) for c in weights.COMPONENTS)
