"""madmom's downbeat tracker (remixer.rhythm.MadmomTracker) with its real trained networks: on real recordings,
on synthetic meters, its weights as their sources pin them, its pickles read safely, its Viterbi as fast
and as exact as needed."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from remixer import audio, checkpoints, madmom_compiled, rhythm, weights
from remixer.testing.beats import drum_pattern
from tests.conftest import SHARED

SONGS = SHARED / "songs"


@pytest.fixture(scope="module")
def tracker(tmp_path_factory) -> rhythm.MadmomTracker:
    root = tmp_path_factory.mktemp("madmom")
    return rhythm.load_tracker(weights.paths_of("madmom", root, offline=True))  # from the installed wheel


@pytest.fixture(scope="module")
def found(tracker) -> dict[str, rhythm.Rhythm]:
    """Each real recording's rhythm, found once for the module."""
    results = {}
    for name in ("vibe_ace.ogg", "lets_go_fishin_0-40s.ogg"):
        song = audio.decode(SONGS / name)
        results[name] = tracker.analyze_mix(song.samples, song.sample_rate)
    return results


# --- its weights, as their sources pin them ------------------------------------------------------------------

def test_the_manifest_pins_the_networks_as_madmom_infer_does():
    """madmom-infer 0.2.0 (madmom_infer/models.py) pins each file's path under CPJKU/madmom_models and its
    sha256: the manifest must say the same, file by file, and the installed wheel must hold those bytes."""
    from madmom_infer import models

    pinned = {f"{models.MODELS_REPO_RAW_BASE}/{f.relpath}": f.sha256 for f in models._DOWNBEATS_BLSTM_FILES}
    ours = {f.url: f.sha256 for f in weights.files_of(["madmom"])}
    assert ours == pinned and len(ours) == 8
    for file in weights.files_of(["madmom"]):
        copy = weights.installed_copy(file)
        assert copy is not None and copy.stat().st_size == file.size
        assert weights.download.sha256_of(copy) == file.sha256
        assert file.licence == "CC-BY-NC-SA-4.0"


def test_offline_the_networks_come_from_the_installed_wheel_checked_by_digest(tmp_path, monkeypatch):
    root = weights.ensure(["madmom"], tmp_path / "ok", offline=True, progress=False)
    assert all(weights.download.sha256_of(root / f.name) == f.sha256 for f in weights.files_of(["madmom"]))
    # An installed copy whose bytes differ from the pin is not used: offline, the files are then missing.
    forged = tmp_path / "forged.pkl"
    forged.write_bytes(b"not madmom's network")
    monkeypatch.setattr(weights, "installed_copy", lambda file: forged)
    with pytest.raises(weights.WeightsError, match="8 model file\\(s\\) missing"):
        weights.ensure(["madmom"], tmp_path / "forged", offline=True, progress=False)


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_network_file_is_refused_without_running(tmp_path):
    marker = tmp_path / "created-by-the-pickle"
    path = tmp_path / "downbeats_blstm_1.pkl"
    path.write_bytes(pickle.dumps(Payload(marker), protocol=2))
    with pytest.raises(checkpoints.CheckpointError, match=r"not loaded: unpickling it would need posix\.system"):
        rhythm.load_tracker([path])
    assert not marker.exists()


def test_a_network_file_holding_something_else_is_refused(tmp_path):
    path = tmp_path / "downbeats_blstm_1.pkl"
    path.write_bytes(pickle.dumps({"layers": []}, protocol=2))
    with pytest.raises(rhythm.RhythmError, match="holds a NeuralNetwork, this one a dict"):
        rhythm.load_tracker([path])


# --- on real recordings ---------------------------------------------------------------------------------------

# What the tracker found here (2026-12-06), with tolerances for another CPU's float rounding: the tempo to
# 1.5 bpm, the meter exactly, the beat count to 2, and the first eight bar lines to 30 ms (3 frames at 100 fps).
EXPECTED = {
    "vibe_ace.ogg": dict(bpm=130.0, meter=4, beats=130, downbeats=[0.05, 1.86, 3.72, 5.56, 7.41, 9.26, 11.11, 12.95]),
    "lets_go_fishin_0-40s.ogg": dict(bpm=176.0, meter=4, beats=118,
                                     downbeats=[0.22, 1.58, 2.94, 4.3, 5.66, 7.02, 8.38, 9.74]),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_real_recordings_tempo_meter_and_bar_phase(found, name):
    result, expected = found[name], EXPECTED[name]
    assert result.tracker == "madmom" and result.sections == []
    assert result.bpm == pytest.approx(expected["bpm"], abs=1.5)
    assert max(result.beat_positions) == expected["meter"]
    assert abs(len(result.beats) - expected["beats"]) <= 2
    np.testing.assert_allclose(result.downbeats[:8], expected["downbeats"], atol=0.03)
    # Every bar holds `meter` beats, and every downbeat is one of the beats.
    assert set(result.downbeats) <= set(result.beats)
    counts = np.diff([result.beats.index(d) for d in result.downbeats])
    assert np.median(counts) == expected["meter"]


@pytest.mark.parametrize("meter", [3, 4])
def test_synthetic_meters_give_their_meter_and_downbeats(tracker, meter):
    song, beats, downbeats = drum_pattern(meter, bpm=120.0, bars=10)
    result = tracker.analyze_mix(song, 44100)
    assert max(result.beat_positions) == meter
    assert result.bpm == pytest.approx(120.0, abs=1)
    # Within the pattern (the last bar's ringing bass note may earn one more bar line after it).
    np.testing.assert_allclose(_within(result.downbeats, beats[-1]), downbeats, atol=0.03)
    np.testing.assert_allclose(_within(result.beats, beats[-1]), beats, atol=0.03)


def _within(times: list[float], last: float) -> list[float]:
    return [t for t in times if t <= last + 0.03]


def test_silence_gives_no_beats_and_no_error(tracker):
    result = tracker.analyze_mix(np.zeros((2, 44100 * 3), np.float32), 44100)
    assert result.bpm is None and result.downbeats == [] and result.beats == []


def test_the_rate_of_the_mix_does_not_matter(tracker):
    import soxr

    song, beats, downbeats = drum_pattern(4, bars=6)
    at_32k = tracker.analyze_mix(soxr.resample(song, 44100, 32000), 32000)
    np.testing.assert_allclose(_within(at_32k.downbeats, beats[-1]), downbeats, atol=0.03)


# --- bar marks without a tempo --------------------------------------------------------------------------------

def test_bar_marks_are_kept_when_no_tempo_is_found():
    """MusiConGen was trained with bar marks whenever it had beats: when the tempo cannot be estimated the
    downbeats stay, rebuilt from the beat positions when the tracker gave none."""
    from allin1_infer.postprocessing import tempo

    beats = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    positions = [1, 2, 3, 4, 1, 2, 3, 4]
    original = tempo.estimate_tempo_from_beats
    try:
        tempo.estimate_tempo_from_beats = lambda found: None  # a tempo estimate that fails
        result = rhythm._rhythm(beats, positions, [], [], "all-in-one")
    finally:
        tempo.estimate_tempo_from_beats = original
    assert result.bpm is None and result.downbeats == [0.5, 2.5]
    found = rhythm._rhythm(beats, positions, [0.5, 2.5], [], "madmom")
    assert found.bpm == 120.0 and found.downbeats == [0.5, 2.5]


# --- the bar tracker's Viterbi ---------------------------------------------------------------------------------

def test_compiled_viterbi_gives_madmom_infers_own_paths_on_a_real_recording(tracker):
    """The compiled Viterbi against madmom-infer's numpy one on a real song's activations: the same path and
    the same log probability (exactly), for both meters' models, and so the same beats."""
    from madmom_infer.features.downbeats import DBNDownBeatTrackingProcessor

    song = audio.decode(SONGS / "lets_go_fishin_0-40s.ogg")
    pcm = tracker.pcm(song.samples, song.sample_rate)
    activations = tracker.activations.process(pcm)
    theirs = DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100)
    for hmm in theirs.hmms:
        path, log_probability = hmm.viterbi(activations)
        ours, our_log_probability = madmom_compiled.viterbi(hmm, activations)
        assert np.array_equal(path, ours) and log_probability == our_log_probability
    np.testing.assert_array_equal(theirs.process(activations), tracker.bars.process(activations))


# --- the networks' compiled LSTMs -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vibe_ace.ogg", "lets_go_fishin_0-40s.ogg"])
def test_compiled_networks_give_madmom_infers_own_beats_on_real_recordings(tracker, name):
    """The eight networks with madmom-infer's own numpy LSTMs against ours (compiled, float32, another
    summation order): averaged activations within 1e-5 (1.8e-6 measured), and the very same beats and bars."""
    from madmom_infer.features.downbeats import DBNDownBeatTrackingProcessor
    from madmom_infer.ml.nn import NeuralNetworkEnsemble

    paths = [weights.installed_copy(f) for f in weights.files_of(["madmom"])]
    theirs = NeuralNetworkEnsemble([checkpoints.read_pickle(p, "madmom network", checkpoints.MADMOM)
                                    for p in paths])
    song = audio.decode(SONGS / name)
    pcm = tracker.pcm(song.samples, song.sample_rate)
    features = tracker.activations.processors[0].process(pcm)
    reference = np.delete(theirs.process(features), 0, axis=1)
    ours = tracker.activations.process(pcm)
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    bars = DBNDownBeatTrackingProcessor(beats_per_bar=[3, 4], fps=100)
    np.testing.assert_array_equal(bars.process(ours), bars.process(reference))
