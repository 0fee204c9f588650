"""Mixing the song's vocals over the new instrumental (remixer.mix)."""

from __future__ import annotations

import numpy as np
import pytest

from remixer.audio import STRATEGIES
from remixer.mix import mix, prepare_vocals
from tests.conftest import dominant_frequency, tone

SR = 32000


def _clicks(at_seconds: float, sample_rate: int, seconds: float = 3.0) -> np.ndarray:
    vocals = np.zeros((2, int(seconds * sample_rate)), np.float32)
    i = int(round(at_seconds * sample_rate))
    vocals[0, i] = 1.0
    vocals[1, i + int(0.5 * sample_rate)] = -1.0  # the right channel differs: stereo must survive
    return vocals


def test_vocals_come_back_at_their_original_position_in_stereo():
    vocals_44k = _clicks(1.234, 44100)
    vocals = prepare_vocals(vocals_44k, 44100, SR, channels=2, length=3 * SR)
    out = mix(np.zeros((2, 3 * SR), np.float32), vocals, SR, strategy="peak")
    assert out.shape == (2, 3 * SR)
    assert abs(int(np.abs(out[0]).argmax()) - round(1.234 * SR)) <= 1
    assert abs(int(np.abs(out[1]).argmax()) - round(1.734 * SR)) <= 1
    assert np.abs(out[0, round(1.734 * SR)]) < 0.05  # channels were not merged


def test_mono_models_get_mono_vocals_of_the_song_length():
    vocals = prepare_vocals(_clicks(0.5, 44100, seconds=4.0), 44100, SR, channels=1, length=2 * SR)
    assert vocals.shape == (1, 2 * SR)
    short = prepare_vocals(_clicks(0.2, 44100, seconds=1.0), 44100, SR, channels=1, length=2 * SR)
    assert short.shape == (1, 2 * SR) and not short[:, SR + 10:].any()


def test_levels_are_instrumental_half_vocals_quarter():
    instrumental = tone(220, 2.0, SR, amplitude=0.9)
    vocals = tone(660, 2.0, SR, amplitude=0.1)
    out = mix(instrumental, vocals, SR, strategy="peak")
    spectrum = np.abs(np.fft.rfft(out[0] * np.hanning(out.shape[1])))
    freqs = np.fft.rfftfreq(out.shape[1], 1 / SR)
    level = {f: spectrum[np.abs(freqs - f).argmin()] for f in (220, 660)}
    assert level[220] / level[660] == pytest.approx(2.0, rel=0.01)
    assert dominant_frequency(out, SR) == pytest.approx(220, abs=1)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_never_clipped_never_nan(strategy):
    loud = tone(100, 2.0, SR, amplitude=5.0)
    out = mix(loud, loud, SR, strategy=strategy)
    assert np.abs(out).max() <= 1.0 and np.all(np.isfinite(out))
    silence = np.zeros((2, SR), np.float32)
    assert not mix(silence, silence, SR, strategy=strategy).any()


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="differ in shape"):
        mix(np.zeros((2, 10), np.float32), np.zeros((1, 10), np.float32), SR)
