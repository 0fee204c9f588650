"""Separation (demucs) and rhythm analysis (All-In-One) through the real libraries, random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from remixer import rhythm, separation
from remixer.rhythm import Rhythm, load_analyzer, select_folds
from remixer.separation import STEM_NAMES, load_separator
from remixer.testing.rhythm import folds_in
from remixer.testing.separation import checkpoint_in

SR = 44100


@pytest.fixture(scope="module")
def separator(tiny_weights):
    return load_separator(checkpoint_in(tiny_weights), "cpu")


@pytest.fixture(scope="module")
def analyzer(tiny_weights):
    return load_analyzer(folds_in(tiny_weights), "cpu")


def song(seconds: float = 6.0, sample_rate: int = SR, channels: int = 2) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    music = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sign(np.sin(2 * np.pi * 2 * t))
    return np.stack([music * (0.8 + 0.2 * c) for c in range(channels)]).astype(np.float32)


def test_stems_structure_and_determinism(separator):
    audio = song()
    runs = separator.runs
    stems = separator.separate(audio, SR)
    assert separator.runs == runs + 1
    assert list(stems) == list(STEM_NAMES)
    for name in STEM_NAMES:
        assert stems[name].shape == (2, audio.shape[1]) and stems[name].dtype == np.float32
        assert np.all(np.isfinite(stems[name]))
    np.testing.assert_allclose(stems.drumless, stems["vocals"] + stems["bass"] + stems["other"])
    np.testing.assert_allclose(stems.accompaniment, stems["drums"] + stems["bass"] + stems["other"])
    again = separator.separate(audio, SR)
    for name in STEM_NAMES:
        np.testing.assert_array_equal(again[name], stems[name])


@pytest.mark.parametrize("seconds,sample_rate,channels", [(0.3, SR, 2), (2.0, 8000, 1), (3.0, 48000, 2)])
def test_short_mono_and_other_rates_come_out_at_44k_stereo(separator, analyzer, seconds, sample_rate, channels):
    stems = separator.separate(song(seconds, sample_rate, channels), sample_rate)
    expected = round(seconds * SR)
    assert all(abs(stems[name].shape[1] - expected) <= 1 and stems[name].shape[0] == 2 for name in STEM_NAMES)
    result = analyzer.analyze(stems)
    assert isinstance(result, Rhythm)


def test_silence_gives_no_beat_and_no_exception(separator, analyzer):
    stems = separator.separate(np.zeros((2, 3 * SR), np.float32), SR)
    assert all(np.all(np.isfinite(stems[n])) for n in STEM_NAMES)
    result = analyzer.analyze(stems)
    assert result.bpm is None and result.downbeats == []


def test_checkpoint_is_demucs_own_format(tiny_weights):
    from remixer import weights

    (file,) = weights.files_of(["htdemucs"])
    path = tiny_weights / file.name
    package = torch.load(path, weights_only=False)
    assert set(package) >= {"klass", "args", "kwargs", "state"}
    assert all(v.dtype == torch.float16 for v in package["state"].values() if v.is_floating_point())
    # The class is pickled under the name the published checkpoints use.
    import zipfile

    with zipfile.ZipFile(path) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"demucs.htdemucs" in pickled and b"demucs_infer" not in pickled
    model = separation.read_model(tiny_weights / file.name)
    assert list(model.sources) == list(STEM_NAMES)


def test_single_fold_and_ensemble_load(tiny_weights):
    from allin1_infer.models.ensemble import Ensemble

    single = load_analyzer(select_folds(folds_in(tiny_weights), "harmonix-fold3"), "cpu")
    assert not isinstance(single.model, Ensemble) and single.model.cfg.fold == 3
    ensemble = load_analyzer(select_folds(folds_in(tiny_weights)), "cpu")
    assert isinstance(ensemble.model, Ensemble) and len(ensemble.model.models) == 8
    with pytest.raises(ValueError, match="harmonix-fold0..7"):
        select_folds(folds_in(tiny_weights), "harmonix-fold9")


def test_missing_stem_is_named(analyzer):
    with pytest.raises(ValueError, match="missing \\['vocals'\\]"):
        analyzer.analyze({n: np.zeros((2, SR), np.float32) for n in ("drums", "bass", "other")})


# --- post-processing on constructed activations ------------------------------

def _activations(times: np.ndarray, frames: int, fps: int = 100) -> torch.Tensor:
    """Logits whose sigmoid peaks (0.95) on the frames of `times`, 0.01 elsewhere."""
    prob = np.full(frames, 0.01)
    for t in times:
        i = int(round(t * fps))
        if i < frames:
            prob[max(i - 1, 0):i + 2] = [0.4, 0.95, 0.4][: min(3, frames - max(i - 1, 0))]
    return torch.logit(torch.tensor(prob, dtype=torch.float32))[None]


def test_decoder_recovers_bpm_and_downbeats_with_tempo_drift(analyzer):
    from allin1_infer.typings import AllInOneOutput

    # 120 bpm in 4/4 drifting to about 126 bpm over 40 s.
    intervals = 0.5 * (1 - 0.05 * np.linspace(0, 1, 80))
    beats = 1.0 + np.concatenate([[0], np.cumsum(intervals)])
    downbeats = beats[::4]
    frames = int((beats[-1] + 2) * 100)
    logits = AllInOneOutput(
        logits_beat=_activations(beats, frames),
        logits_downbeat=_activations(downbeats, frames),
        logits_section=torch.full((1, frames), -5.0),
        logits_function=torch.zeros((1, 10, frames)),
    )
    result = rhythm._postprocess(logits, analyzer.model.cfg)
    assert result.bpm is not None and 118 <= result.bpm <= 126
    found = np.array(result.downbeats)
    inner = downbeats[1:-1]
    errors = np.abs(found[None, :] - inner[:, None]).min(axis=1)
    assert errors.max() <= 0.020
    assert len(found) <= len(downbeats) + 1


def test_stems_equal_demucs_infers_own_separator_by_name(separator, tiny_weights, tmp_path):
    """Our Separator against demucs-infer's own entry point (Separator.separate_tensor) on the same
    random htdemucs and input: same values, each stem under its own name, back on the input's scale."""
    import hashlib
    import shutil

    from demucs_infer.api import Separator as DemucsSeparator

    (source,) = list((tiny_weights / "demucs").glob("955717e8-*.th"))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:8]  # demucs checks the name's checksum
    shutil.copy(source, tmp_path / f"955717e8-{digest}.th")
    theirs = DemucsSeparator(model="955717e8", repo=tmp_path, device="cpu", shifts=0, overlap=separator.overlap)
    music = 3.0 * song(4.0) + 0.5  # loud and off-centre: the standardisation must be undone exactly
    _, expected = theirs.separate_tensor(torch.from_numpy(music), SR)
    ours = separator.separate(music, SR)
    assert list(expected) == list(separator.model.sources) and set(ours) == set(STEM_NAMES)
    for name in STEM_NAMES:
        np.testing.assert_allclose(ours[name], expected[name].numpy(), atol=1e-5, rtol=1e-5, err_msg=name)
    assert not np.allclose(ours["vocals"], ours["drums"])  # the names pick different stems
