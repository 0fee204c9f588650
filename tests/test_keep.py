"""keep (the song's own drums, bass or other under the new band) and the outputs at the song's own rate: the
kept parts are the song's stems, sample-aligned, at one gain; the song's vocal energy above 16 kHz reaches
the remix. In-process on the tiny weights with a real CC BY recording (what the song's side becomes is real;
the new band is noise)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from remixer import audio, keytempo, mix
from remixer.pipeline import _section
from remixer.request import RemixRequest, RequestError, kept_parts
from tests.conftest import SHARED

SONG = SHARED / "songs" / "lets_go_fishin_0-40s.ogg"
SECONDS = 10.0
LSB = 1 / 32768
# A 16-bit file is within 1 LSB of what was written (libsndfile's float->int16 conversion), and the gain is
# fitted from the rounded file: 3 LSB in all. A one-sample shift, or a trip through 32 kHz, is tens of LSB off.
ROUNDED = 3 * LSB


@pytest.fixture(scope="module")
def song_stems(tiny_remixer):
    """The song's part as the remixer separates it (the same separator, the same samples)."""
    part, _ = _section(audio.decode(SONG), None, SECONDS)
    return part, tiny_remixer.separator.separate(part.samples, part.sample_rate)


def _read(path) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(path, always_2d=True, dtype="float32")
    return samples.T, rate


def _gain_and_residual(expected: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    gain = float(np.sum(expected * got) / np.sum(expected * expected))
    return gain, float(np.abs(got - gain * expected).max())


def _energy_above(samples: np.ndarray, rate: int, hz: float = 16000.0) -> float:
    spectrum = np.fft.rfft(samples.astype(np.float64), axis=-1)
    return float(np.sum(np.abs(spectrum[..., np.fft.rfftfreq(samples.shape[-1], 1 / rate) > hz]) ** 2))


def test_keep_names_parts_and_refuses_keeping_everything(tmp_path):
    song = tmp_path / "s.wav"
    song.write_bytes(b"RIFF")
    assert kept_parts("bass, drums") == ("drums", "bass") and kept_parts(None) == ()
    with pytest.raises(RequestError, match="keep names the song's parts to keep: any of drums, bass, other .*'vocals'"):
        RemixRequest.from_inputs(prompt="x", music_input=str(song), keep="drums,vocals")
    with pytest.raises(RequestError, match="cannot keep all of drums, bass, other: nothing would be new"):
        RemixRequest.from_inputs(prompt="x", music_input=str(song), keep="drums bass other")
    assert RemixRequest.from_inputs(prompt="x", music_input=str(song), keep="").keep is None


def test_kept_drums_and_bass_are_the_songs_own_sample_aligned_at_the_songs_rate(tiny_remixer, song_stems, tmp_path):
    part, stems = song_stems
    request = RemixRequest.from_inputs(prompt="funk", music_input=str(SONG), model_version="stereo-chord",
                                       end_time=SECONDS, keep="drums,bass", return_stems=True, seed=1,
                                       normalization_strategy="peak", return_analysis=True, return_instrumental=True)
    result = tiny_remixer.remix(request, tmp_path)
    assert result.sample_rate == part.sample_rate == 44100
    assert list(result.stems) == ["song_drums", "song_bass", "other", "vocals"]
    remix, rate = _read(result.remix)
    assert rate == 44100 and remix.shape == (2, int(SECONDS * 44100))
    for name in ("drums", "bass"):
        got, _ = _read(result.stems[f"song_{name}"])
        expected = mix.conform(stems[name], 44100, rate, 2, remix.shape[1])
        gain, residual = _gain_and_residual(expected, got)
        # The song's stem at one gain (its mix level), to 16-bit rounding: the same samples, not a copy
        # shifted, resampled through 32 kHz or changed.
        assert gain > 0 and residual <= ROUNDED, (name, residual / LSB)
        _, shifted = _gain_and_residual(np.roll(expected, 1, axis=1), got)
        through_32k = mix.conform(mix.conform(expected, rate, 32000, 2, int(SECONDS * 32000)), 32000, rate, 2,
                                  expected.shape[1])
        _, resampled = _gain_and_residual(through_32k, got)
        assert shifted > 10 * ROUNDED and resampled > 10 * ROUNDED, (shifted / LSB, resampled / LSB)
    # What the remix holds: the song's drums and bass and the new band's other add up to the instrumental
    # returned beside them (peak normalisation is one gain; 16-bit rounding of four files).
    parts = sum(_read(result.stems[name])[0] for name in ("song_drums", "song_bass", "other"))
    assert np.abs(parts - _read(result.instrumental)[0]).max() <= 4 * LSB
    report = json.loads(result.analysis_json.read_text())
    assert report["kept"] == ["drums", "bass"]
    assert report["fidelity_of"] == "the new band alone (the song's own drums, bass kept)"


def test_the_songs_vocal_energy_above_16_khz_reaches_the_remix(tiny_remixer, song_stems, tmp_path):
    """At the song's rate the share is measured on the remix itself (the new band, made at 32 kHz, holds
    nothing above 16 kHz); at 32000 (what the published predictor returned) it is 0."""
    part, stems = song_stems
    shares = {}
    for rate_input in ("song", "32000"):
        request = RemixRequest.from_inputs(prompt="funk", music_input=str(SONG), model_version="chord",
                                           end_time=SECONDS, return_stems=True, seed=2, output_sample_rate=rate_input,
                                           normalization_strategy="peak")
        result = tiny_remixer.remix(request, tmp_path / rate_input)
        remix, rate = _read(result.remix)
        vocals, _ = _read(result.stems["vocals"])
        song_vocals = mix.conform(stems["vocals"], 44100, rate, remix.shape[0], remix.shape[1])
        gain, _ = _gain_and_residual(song_vocals, vocals)
        shares[rate_input] = _energy_above(remix, rate) / (gain ** 2 * _energy_above(song_vocals, 44100)
                                                           if rate == 44100 else 1.0)
    assert _energy_above(mix.conform(stems["vocals"], 44100, 44100, 1, int(SECONDS * 44100)), 44100) > 0
    assert shares["song"] >= 0.9, shares
    assert shares["32000"] == 0.0  # nothing above 16 kHz exists at 32 kHz


def test_kept_bass_moves_with_the_key_kept_drums_do_not(tiny_remixer, song_stems, tmp_path):
    part, stems = song_stems
    request = RemixRequest.from_inputs(prompt="funk", music_input=str(SONG), model_version="chord", end_time=SECONDS,
                                       keep="drums,bass", transpose=3, return_stems=True, seed=1,
                                       normalization_strategy="peak")
    result = tiny_remixer.remix(request, tmp_path)
    drums, rate = _read(result.stems["song_drums"])
    bass, _ = _read(result.stems["song_bass"])
    length = drums.shape[1]
    _, residual = _gain_and_residual(mix.conform(stems["drums"], 44100, rate, 1, length), drums)
    assert residual <= ROUNDED  # drums: not pitch-shifted
    shifted = keytempo.shift_pitch(stems["bass"], 44100, 3)
    _, moved = _gain_and_residual(mix.conform(shifted, 44100, rate, 1, length), bass)
    _, unmoved = _gain_and_residual(mix.conform(stems["bass"], 44100, rate, 1, length), bass)
    assert moved <= ROUNDED < 10 * ROUNDED < unmoved  # bass: shifted like the vocals, formants kept


def test_kept_drums_are_stretched_with_tempo_as_the_vocals_are(tiny_remixer, song_stems, tmp_path):
    part, stems = song_stems
    bpm = tiny_remixer.tracker.analyze_mix(part.samples, part.sample_rate).bpm
    tempo = round(bpm * 0.9, 1)
    request = RemixRequest.from_inputs(prompt="funk", music_input=str(SONG), model_version="chord", end_time=SECONDS,
                                       keep="drums", tempo=tempo, beat_tracker="madmom", return_stems=True, seed=1,
                                       normalization_strategy="peak")
    result = tiny_remixer.remix(request, tmp_path)
    drums, rate = _read(result.stems["song_drums"])
    factor = bpm / tempo
    assert drums.shape[1] == pytest.approx(SECONDS * factor * rate, abs=rate / 50)
    stretched = keytempo.stretch_time(stems["drums"], 44100, factor)
    _, residual = _gain_and_residual(mix.conform(stretched, 44100, rate, 1, drums.shape[1]), drums)
    assert residual <= ROUNDED
