"""Mixing the song's vocals over the new band (remixer.mix): the published peak mix, and the song's own balance
measured on signals whose loudness is known (BS.1770 through pyloudnorm)."""

from __future__ import annotations

import numpy as np
import pytest

from remixer import mix as mixing
from remixer.audio import STRATEGIES, loudness_lufs
from remixer.mix import BALANCES, mix, prepare_vocals
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
    out = mix(np.zeros((2, 3 * SR), np.float32), vocals, SR, strategy="peak").remix
    assert out.shape == (2, 3 * SR)
    assert abs(int(np.abs(out[0]).argmax()) - round(1.234 * SR)) <= 1
    assert abs(int(np.abs(out[1]).argmax()) - round(1.734 * SR)) <= 1
    assert np.abs(out[0, round(1.734 * SR)]) < 0.05  # channels were not merged


def test_mono_models_get_mono_vocals_of_the_song_length():
    vocals = prepare_vocals(_clicks(0.5, 44100, seconds=4.0), 44100, SR, channels=1, length=2 * SR)
    assert vocals.shape == (1, 2 * SR)
    short = prepare_vocals(_clicks(0.2, 44100, seconds=1.0), 44100, SR, channels=1, length=2 * SR)
    assert short.shape == (1, 2 * SR) and not short[:, SR + 10:].any()


def test_the_published_levels_are_instrumental_half_vocals_quarter():
    instrumental = tone(220, 2.0, SR, amplitude=0.9)
    vocals = tone(660, 2.0, SR, amplitude=0.1)
    out = mix(instrumental, vocals, SR, strategy="peak", balance="published").remix
    spectrum = np.abs(np.fft.rfft(out[0] * np.hanning(out.shape[1])))
    freqs = np.fft.rfftfreq(out.shape[1], 1 / SR)
    level = {f: spectrum[np.abs(freqs - f).argmin()] for f in (220, 660)}
    assert level[220] / level[660] == pytest.approx(2.0, rel=0.01)
    assert dominant_frequency(out, SR) == pytest.approx(220, abs=1)


@pytest.mark.parametrize("balance", BALANCES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_never_clipped_never_nan(strategy, balance):
    loud = tone(100, 2.0, SR, amplitude=5.0)
    out = mix(loud, loud, SR, strategy=strategy, balance=balance).remix
    assert np.abs(out).max() <= 1.0 and np.all(np.isfinite(out))
    silence = np.zeros((2, SR), np.float32)
    silent = mix(silence, silence, SR, strategy=strategy, balance=balance, reference=_reference(silence, silence))
    assert not silent.remix.any() and np.all(np.isfinite(silent.levels.band))


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="differ in shape"):
        mix(np.zeros((2, 10), np.float32), np.zeros((1, 10), np.float32), SR)
    with pytest.raises(ValueError, match="unknown mix balance 'loud'; choose one of song, published"):
        mix(np.zeros((2, 10), np.float32), np.zeros((2, 10), np.float32), SR, balance="loud")


# --- the song's own balance ---------------------------------------------------------------------------------

SECONDS = 24.0
BARS = list(np.arange(0.5, SECONDS, 2.0))  # 120 bpm, 4/4: a downbeat every 2 s


def _noise(seconds: float, seed: int, level_db: float = -20.0) -> np.ndarray:
    """Stereo noise at about `level_db` dBFS RMS: a band or a voice whose level is all that matters here."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, int(seconds * SR))) * 10 ** (level_db / 20)).astype(np.float32)


def _arc(samples: np.ndarray, quiet_until: float, quiet_db: float) -> np.ndarray:
    t = np.arange(samples.shape[1]) / SR
    return (samples * np.where(t < quiet_until, 10 ** (quiet_db / 20), 1.0)).astype(np.float32)


def _reference(vocals, replaced, downbeats=(), factor=1.0, duration=None):
    duration = vocals.shape[1] / SR * factor if duration is None else duration
    return mixing.song_reference(vocals, replaced, replaced, SR, list(downbeats), duration, factor)


def test_the_band_takes_the_replaced_parts_loudness_and_the_vocals_keep_the_songs_scale():
    """Without bars (a song whose rhythm was not found) the band gets one gain: its loudness is the replaced
    parts', so the singer sits against it as in the song, to 0.1 LU; the vocals are the song's times one gain."""
    song_band, vocals = _noise(SECONDS, 1, -30.0), _noise(SECONDS, 2, -26.0)
    new_band = _noise(SECONDS, 3, -8.0)  # a band much louder than the song's
    mixed = mix(new_band, vocals, SR, "peak", reference=_reference(vocals, song_band))
    placed, sung = mixed.levels.of_band(new_band), mixed.levels.of_vocals(vocals)
    song_balance = loudness_lufs(vocals, SR) - loudness_lufs(song_band, SR)
    assert loudness_lufs(sung, SR) - loudness_lufs(placed, SR) == pytest.approx(song_balance, abs=0.1)
    assert mixed.report["song_vocals_to_band_lu"] == pytest.approx(song_balance, abs=0.01)
    assert mixed.report["remix_vocals_to_band_lu"] == pytest.approx(song_balance, abs=0.1)
    assert mixed.report["envelope"] is None and np.ndim(mixed.levels.band) == 0
    # The parts at their levels add up to the remix (peak normalization: one gain).
    np.testing.assert_allclose(placed + sung, mixed.remix, atol=1e-6)
    # The published mix of the same parts: the band peak-scaled, 10 LU and more off the song's balance.
    published = mix(new_band, vocals, SR, "peak", balance="published")
    assert published.report["balance"] == "published"
    off = (loudness_lufs(published.levels.of_vocals(vocals), SR)
           - loudness_lufs(published.levels.of_band(new_band), SR)) - song_balance
    assert abs(off) > 3.0


def test_the_band_follows_the_songs_bars_smoothly_and_bounded():
    """The song's band quiet (-12 dB) for its first half: the envelope lowers the new band there by about as
    much, one gain per bar, never more than BOUND_DB, moving at most MAX_STEP_DB from one bar middle to the next
    (smoothed over three bars: a fade, never a step within a bar)."""
    song_band = _arc(_noise(SECONDS, 1, -24.0), SECONDS / 2, -12.0)
    vocals, new_band = _noise(SECONDS, 2, -30.0), _noise(SECONDS, 3, -10.0)
    reference = _reference(vocals, song_band, BARS)
    mixed = mix(new_band, vocals, SR, "peak", reference=reference)
    envelope = mixed.report["envelope"]
    gains = np.array(envelope["gain_db"])
    assert envelope["bar_starts"] == pytest.approx([0.0] + BARS)
    assert np.abs(gains).max() <= mixing.BOUND_DB
    assert 0 < np.abs(np.diff(gains)).max() <= mixing.MAX_STEP_DB
    early, late = gains[np.array(envelope["bar_starts"]) < 8].mean(), gains[np.array(envelope["bar_starts"]) > 16].mean()
    assert late - early == pytest.approx(12.0, abs=2.0)
    # The curve itself: linear in dB between bar middles, so within a 2 s bar it moves by at most one step.
    curve_db = 20 * np.log10(np.asarray(mixed.levels.band))
    per_bar = [np.ptp(curve_db[int(a * SR):int(b * SR)]) for a, b in zip(BARS[:-1], BARS[1:])]
    assert max(per_bar) <= mixing.MAX_STEP_DB + 1e-3
    assert np.abs(np.diff(curve_db)).max() < 1e-3  # no jump from one sample to the next
    placed = mixed.levels.of_band(new_band)
    assert mixed.report["dynamics_correlation"] >= 0.9
    assert _correlation_as_generated(new_band, reference) < 0.5  # the band as generated: flat
    # The whole still sits at the song's balance.
    assert loudness_lufs(mixed.levels.of_vocals(vocals), SR) - loudness_lufs(placed, SR) == pytest.approx(
        reference.song_balance_lu, abs=0.5)


def _correlation_as_generated(band, reference):
    value = mixing.dynamics_correlation(band, SR, reference)
    return 0.0 if value is None else value


def test_bar_steps_are_limited_and_smoothing_keeps_a_flat_song_flat():
    assert mixing.limit_steps(np.array([0.0, 10.0, 10.0, -10.0])).tolist() == [0.0, 6.0, 10.0, 4.0]
    assert mixing.smooth_bars(np.full(5, 3.0)) == pytest.approx(np.full(5, 3.0))
    assert mixing.smooth_bars(np.array([0.0, 0.0, 4.0, 0.0, 0.0])) == pytest.approx([0.0, 1.0, 2.0, 1.0, 0.0])


def test_a_tempo_change_maps_the_bars_back_onto_the_songs_stems():
    """The stems are on the song's timeline; the bars on the remix's (time factor 1.5): the bar loudness is
    measured where each bar was in the song, so the quiet bars are the remix's first 18 s (the song's 12)."""
    song_band = _arc(_noise(SECONDS, 1, -24.0), SECONDS / 2, -12.0)
    factor = 1.5
    reference = _reference(_noise(SECONDS, 2), song_band, [t * factor for t in BARS], factor)
    middles = (reference.bars[:-1] + reference.bars[1:]) / 2
    relative = reference.bar_lufs - reference.replaced_lufs
    assert relative[middles < 12 * factor - 3].max() < -9 and relative[middles > 12 * factor + 3].min() > -3
    assert reference.bars[-1] == pytest.approx(SECONDS * factor)


def test_a_song_without_a_band_to_match_sets_the_band_by_the_singer():
    """An a cappella song (its band silent): the new band 1 LU under the vocals (pop's balance), said so."""
    vocals, silent, new_band = _noise(SECONDS, 2, -20.0), np.zeros((2, int(SECONDS * SR)), np.float32), \
        _noise(SECONDS, 3, -5.0)
    mixed = mix(new_band, vocals, SR, "peak", reference=_reference(vocals, silent, BARS))
    assert mixed.report["band_reference"].startswith("vocals")
    balance = loudness_lufs(mixed.levels.of_vocals(vocals), SR) - loudness_lufs(mixed.levels.of_band(new_band), SR)
    assert balance == pytest.approx(mixing.POP_VOCALS_OVER_BAND_LU, abs=0.1)


def test_kept_parts_and_vocals_share_one_gain():
    vocals, kept, new_band = _noise(SECONDS, 2, -25.0), _noise(SECONDS, 4, -15.0), _noise(SECONDS, 3, -5.0)
    mixed = mix(new_band, vocals, SR, "loudness", kept=kept, reference=_reference(vocals, _noise(SECONDS, 1)))
    assert mixed.levels.kept == mixed.levels.vocals
    sung, held = mixed.levels.of_vocals(vocals), mixed.levels.of_kept(kept)
    assert loudness_lufs(held, SR) - loudness_lufs(sung, SR) == pytest.approx(
        loudness_lufs(kept, SR) - loudness_lufs(vocals, SR), abs=0.01)
    assert mixed.report["kept_gain_db"] == mixed.report["vocals_gain_db"]


def test_the_mix_report_says_what_was_done_in_the_words_analysis_json_and_the_cli_use():
    """The report of a song balance with bars (its keys, values and rounding), the band re-set onto the
    replaced parts' loudness after the envelope shaped it (to 0.1 LU), a silent band left as made and said
    so, and describe()'s one line."""
    song_band = _arc(_noise(SECONDS, 1, -24.0), SECONDS / 2, -12.0)
    vocals, new_band = _noise(SECONDS, 2, -30.0), _noise(SECONDS, 3, -10.0)
    reference = _reference(vocals, song_band, BARS)
    mixed = mix(new_band, vocals, SR, "peak", reference=reference)
    report = mixed.report
    assert report["balance"] == "song" and report["band_reference"] == "song"
    assert loudness_lufs(new_band * mixed.levels.band, SR) == pytest.approx(reference.replaced_lufs, abs=0.1)
    assert mixed.levels.band.dtype == np.float32 and mixed.levels.vocals == 1.0 and mixed.levels.kept == 1.0
    envelope = report["envelope"]
    assert all(round(t, 4) == t for t in envelope["bar_starts"]) and all(round(g, 2) == g for g in envelope["gain_db"])
    assert mixing.describe(report) == (
        f"song balance; vocals against the band: song {report['song_vocals_to_band_lu']:+.1f} LU, remix "
        f"{report['remix_vocals_to_band_lu']:+.1f} LU; the band follows the song's loudness "
        f"r={report['dynamics_correlation']:.2f}")
    assert mixing.describe({"balance": "published"}) == "published balance; vocals against the band: song -, remix -"
    silent = mix(np.zeros_like(new_band), vocals, SR, "peak", reference=reference)
    assert silent.report["balance"] == "song"
    assert silent.report["band_reference"] == "none: the new band is silent"
    assert (silent.levels.vocals, silent.levels.band, silent.levels.kept) == (1.0, 1.0, 1.0)
