"""The song's own mix (remixer.mix, remixer.finishing), measured from the output files with ITU-R BS.1770
loudness (pyloudnorm).

Wiring tests: the song is built from known parts (remixer.testing.balance: a real CC BY jazz recording split into
drums, bass and other, quiet for its first half and loud for its second, under a sung voice at a known level), and
the song's separation is fixed to return exactly those parts; a second real CC BY recording stands in for the
generated band (generation fixed). Everything else is real: madmom finds the song's bars, demucs (tiny weights)
separates the new band, beat-sync moves it, the mix balances it, the files are written and read back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from remixer import audio
from remixer.request import RemixRequest
from remixer.testing import balance as known
from tests.conftest import SHARED

RATE = known.RATE
SECTIONS = {"whole": (0.0, known.SECONDS), "quiet": known.QUIET_PART, "loud": known.LOUD_PART}
LSB = 1 / 32768


@pytest.fixture(scope="module")
def band_parts() -> dict[str, np.ndarray]:
    return known.known_parts(SHARED / "songs" / "vibe_ace.ogg")


@pytest.fixture(scope="module")
def new_band() -> np.ndarray:
    return known.stand_in_band(SHARED / "songs" / "lets_go_fishin_0-40s.ogg")


def _read(path) -> np.ndarray:
    samples, _ = sf.read(path, always_2d=True, dtype="float64")
    return samples.T


def remix_known_song(remixer, folder, parts, vocals, band, **inputs):
    channels = 2 if inputs.get("model_version", "stereo-chord").startswith("stereo") else 1
    path = known.write_song(folder, parts, vocals)
    request = RemixRequest.from_inputs(prompt="x", music_input=path, seed=1, beat_tracker="madmom",
                                       return_stems=True, return_analysis=True, **inputs)
    with known.fixed_song_and_band(remixer, parts, vocals, band, channels):
        return remixer.remix(request, folder / "out")


def band_of(result) -> np.ndarray:
    """The new band in the remix: its parts as returned (they add up to it)."""
    return sum(_read(result.stems[name]) for name in ("drums", "bass", "other"))


@pytest.mark.parametrize("over_band, model_version", [(-10.0, "chord"), (3.0, "stereo-chord")],
                         ids=["quiet singer, mono", "loud singer, stereo"])
def test_the_singer_sits_against_the_new_band_as_in_the_song_and_the_band_follows_its_arc(
        remixer, tmp_path, band_parts, new_band, over_band, model_version):
    """Wiring: the song's separation and the generated band fixed. The remix's vocals-to-band balance is the
    song's within 1 LU over the whole song and within 1.5 LU in its quiet and its loud half (the envelope is
    smoothed over three bars); the band's 3 s loudness follows the replaced parts' (correlation >= 0.9). The
    published mix, one input away, is what these limits catch: a half or the whole several LU off, no arc."""
    accompaniment = sum(band_parts.values())
    vocals = known.sung_voice(accompaniment, over_band)
    channels = 1 if model_version == "chord" else 2
    # A mono remix is measured against the song summed to mono (what its listener hears of the song).
    heard_vocals, heard_band = (audio.convert_channels(x, channels) for x in (vocals, accompaniment))
    song = {name: known.balance_lu(heard_vocals, heard_band, RATE, *bounds) for name, bounds in SECTIONS.items()}
    remixes = {balance: remix_known_song(remixer, tmp_path / balance, band_parts, vocals, new_band,
                                         model_version=model_version, mix_balance=balance)
               for balance in ("song", "published")}
    errors, follows = {}, {}
    for balance, result in remixes.items():
        sung, played = _read(result.stems["vocals"]), band_of(result)
        errors[balance] = {name: known.balance_lu(sung, played, RATE, *bounds) - song[name]
                           for name, bounds in SECTIONS.items()}
        follows[balance] = known.arc_correlation(played, RATE, accompaniment, RATE)
        report = json.loads(result.analysis_json.read_text())["mix"]
        assert report["balance"] == balance
        assert report["song_vocals_to_band_lu"] == pytest.approx(song["whole"], abs=0.02)
        assert report["remix_vocals_to_band_lu"] == pytest.approx(song["whole"] + errors[balance]["whole"],
                                                                  abs=0.1)
        assert report["dynamics_correlation"] == pytest.approx(follows[balance], abs=0.05)
    assert abs(errors["song"]["whole"]) <= 1.0, errors
    assert abs(errors["song"]["quiet"]) <= 1.5 and abs(errors["song"]["loud"]) <= 1.5, errors
    assert follows["song"] >= 0.9, follows
    # What the published peak mix does to this song: its whole or a half several LU off, the band flat.
    assert max(abs(error) for error in errors["published"].values()) > 3.0, errors
    assert follows["published"] < 0.8, follows
    envelope = json.loads(remixes["song"].analysis_json.read_text())["mix"]["envelope"]
    assert len(envelope["bar_starts"]) == len(envelope["gain_db"]) >= 8  # one gain per bar of the song
    gains, starts = np.array(envelope["gain_db"]), np.array(envelope["bar_starts"])
    # The quiet half is played quieter than the loud one, by about the song's step (9 dB).
    assert gains[starts >= known.LOUD_PART[0]].mean() - gains[starts < known.QUIET_PART[1]].mean() >= 6.0, envelope


@pytest.mark.parametrize("drums_over_singer", [5.6, -7.4])
def test_kept_parts_keep_the_songs_balance_with_the_singer_and_everything_returned_adds_up(
        remixer, tmp_path, band_parts, new_band, drums_over_singer):
    """Wiring (as above), keep=drums with the song's drums 5.6 LU above or 7.4 LU below the singer: the kept
    drums against the vocals within 0.5 LU of the song's, the singer against the whole band within 1 LU; the
    parts returned add up to the remix (peak normalization: one gain). The published mix misses the first."""
    vocals = known.sung_voice(band_parts["drums"], -drums_over_singer)
    song_drums = known.balance_lu(band_parts["drums"], vocals, RATE)
    song_whole = known.balance_lu(vocals, sum(band_parts.values()), RATE)
    kept = {}
    for balance in ("song", "published"):
        result = remix_known_song(remixer, tmp_path / balance, band_parts, vocals, new_band, keep="drums",
                                  normalization_strategy="peak", return_instrumental=True, mix_balance=balance)
        assert list(result.stems) == ["song_drums", "bass", "other", "vocals"]
        stems = {name: _read(path) for name, path in result.stems.items()}
        kept[balance] = known.balance_lu(stems["song_drums"], stems["vocals"], RATE) - song_drums
        if balance == "song":
            band = stems["song_drums"] + stems["bass"] + stems["other"]
            assert abs(known.balance_lu(stems["vocals"], band, RATE) - song_whole) <= 1.0
            # 16-bit rounding of four files (half a step each); peak normalization adds nothing else.
            assert np.abs(sum(stems.values()) - _read(result.remix)).max() <= 4 * LSB
            assert np.abs(band - _read(result.instrumental)).max() <= 4 * LSB
    assert abs(kept["song"]) <= 0.5, kept
    assert abs(kept["published"]) > 0.5, kept
