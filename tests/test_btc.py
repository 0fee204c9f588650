"""BTC chord recognition: parity with the reference implementation's fixtures."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import btc
from remixer import checkpoints
from remixer.testing import btc as btc_writers
from tests.conftest import SHARED

DATA = SHARED / "btc"
CHECKPOINTS = {"large_voca": 170, "majmin": 25}


@pytest.fixture(scope="module")
def progression():
    samples, sr = sf.read(DATA / "progression.wav", dtype="float32")
    return samples, sr


@pytest.fixture(scope="module", params=list(CHECKPOINTS))
def recognizer(request):
    return request.param, btc.load_model(DATA / f"btc_random_{request.param}.pt")


def test_features_match_the_reference(progression):
    # Same librosa (0.11.0, pinned) and same chunking: agreement to float32 rounding.
    features = btc.extract_features(*progression)
    reference = np.load(DATA / "progression_logcqt.npy")
    assert features.shape == reference.shape == (260, 144)
    np.testing.assert_allclose(features, reference, atol=1e-4, rtol=0)


def test_features_are_resampled_and_downmixed(progression):
    samples, sr = progression
    from remixer.audio import resample

    stereo_44k = resample(np.stack([samples, samples]), sr, 44100)
    features = btc.extract_features(stereo_44k, 44100)
    reference = np.load(DATA / "progression_logcqt.npy")
    assert features.shape == reference.shape
    # Resampling twice changes samples slightly, not the chord content.
    assert np.median(np.abs(features - reference)) < 0.05


def test_logits_match_the_reference(recognizer):
    name, model = recognizer
    reference = np.load(DATA / f"btc_random_{name}_logits.npy")
    logits = model.logits(np.load(DATA / "progression_logcqt.npy"))
    assert logits.shape == reference.shape == (324, CHECKPOINTS[name])
    np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=0)


def test_recognize_gives_the_reference_segments(recognizer, progression):
    name, model = recognizer
    reference = np.load(DATA / f"btc_random_{name}_logits.npy")[:260].argmax(axis=1)
    expected = btc.frames_to_segments(reference, model.labels, 24.0)
    segments = model.recognize(*progression)
    assert segments == expected
    assert segments[0].start == 0 and segments[-1].end == pytest.approx(24.0)
    assert all(a.end == b.start for a, b in zip(segments, segments[1:]))
    assert {s.label for s in segments} <= set(model.labels)
    assert model.recognize(*progression) == segments  # deterministic


def test_vocabularies_match_the_reference_label_lists():
    for name, vocabulary in (("large_voca", btc.LARGE_VOCABULARY), ("majmin", btc.MAJMIN_VOCABULARY)):
        lines = (DATA / f"{name}_labels.txt").read_text().split("\n")
        labels = [line.split("\t")[1] for line in lines if line.strip()]
        assert tuple(labels) == vocabulary


def test_checkpoint_keys_and_shapes_are_the_official_ones(tmp_path):
    written = btc_writers.write_random_checkpoints(tmp_path, seed=3)
    for path, name in zip(written, ("large_voca", "majmin")):
        package = checkpoints.read(path, "BTC checkpoint", checkpoints.NUMPY)
        # As BTC's training code stores them.
        assert all(isinstance(package[key], np.float64) for key in ("mean", "std"))
        state = package["model"]
        expected = {}
        for line in (DATA / f"btc_random_{name}_state_dict_keys.txt").read_text().splitlines():
            key, shape = line.split("\t")
            expected[key] = tuple(int(n) for n in shape.strip("()").split(",") if n.strip())
        assert {k: tuple(v.shape) for k, v in state.items()} == expected
        assert btc.load_model(path).labels == (btc.LARGE_VOCABULARY if name == "large_voca" else btc.MAJMIN_VOCABULARY)


def test_frames_to_segments_merges_runs():
    labels = ("A", "B", "N")
    segments = btc.frames_to_segments(np.array([0, 0, 1, 1, 1, 2]), labels, duration=0.5)
    unit = btc.SECONDS_PER_FRAME
    assert [(s.label, round(s.start, 4), round(s.end, 4)) for s in segments] == [
        ("A", 0, round(2 * unit, 4)), ("B", round(2 * unit, 4), round(5 * unit, 4)), ("N", round(5 * unit, 4), 0.5),
    ]


def test_lab_round_trip(tmp_path):
    segments = [btc.ChordSegment(0.0, 1.5, "C"), btc.ChordSegment(1.5, 3.25, "A:min7")]
    path = btc.write_lab(segments, tmp_path / "song.lab")
    assert path.read_text() == "0.000 1.500 C\n1.500 3.250 A:min7\n"
    assert btc.read_lab(path) == segments


def test_short_and_silent_audio(recognizer):
    _, model = recognizer
    for seconds in (0.2, 3.0):
        segments = model.recognize(np.zeros(int(seconds * 22050), np.float32), 22050)
        assert segments and segments[0].start == 0 and segments[-1].end == pytest.approx(seconds)


def test_bad_checkpoints_are_explained(tmp_path):
    with pytest.raises(btc.BTCFormatError, match="not found"):
        btc.load_model(tmp_path / "none.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(btc.BTCFormatError, match="not a readable BTC checkpoint"):
        btc.load_model(junk)
    torch.save({"model": {"x": torch.zeros(1)}, "mean": 0.0, "std": 1.0}, junk)
    with pytest.raises(btc.BTCFormatError, match="not a BTC checkpoint"):
        btc.load_model(junk)
