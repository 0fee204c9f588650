"""Key and tempo: chords and timeline moved exactly; the vocals shifted and stretched well (measured on a sung
vowel and syllables with known pitch, formants and onsets); the pipeline wired to both (fixed stages)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from btc import ChordSegment
from remixer import chords, generation, keytempo, mix, rhythm, separation
from remixer.request import RemixRequest, RequestError
from remixer.testing import voice
from tests.test_wiring import SECONDS, Spy, _click_times, _clicks

RATE = voice.RATE
SONG_DOWNBEATS = [0.5, 2.5, 4.5, 6.5]  # 120 bpm
SYLLABLES = np.array([0.6, 1.9, 3.3, 4.7, 6.1])  # the song's vocal onsets (s)


# --- chords and timeline ---------------------------------------------------------------------------------


@pytest.mark.parametrize("semitones", [-12, -5, -1, 1, 2, 7, 12])
def test_every_chord_quality_and_root_transposes_to_its_pitch_classes_rotated(semitones):
    for root in ("C", "C#", "Db", "E", "F#", "Bb", "B"):
        for quality in chords.QUALITY_INTERVALS:
            label = f"{root}:{quality}"
            moved = keytempo.transpose_label(label, semitones)
            assert chords.chord_to_pitch_classes(moved) == np.roll(chords.chord_to_pitch_classes(label),
                                                                   semitones).tolist(), (label, moved)


def test_transposed_labels_are_spelled_with_sharps_and_move_a_named_bass():
    assert keytempo.transpose_label("A:min7", 2) == "B:min7"
    assert keytempo.transpose_label("Bb:maj", 1) == "B:maj"
    assert keytempo.transpose_label("C/E", 2) == "D/F#"
    assert keytempo.transpose_label("G:7/3", -2) == "F:7/3"  # a degree bass stays a degree
    assert keytempo.transpose_label("Am", -9) == "Cm"  # shorthand keeps its spelling
    assert [keytempo.transpose_label(x, 5) for x in ("N", "X")] == ["N", "X"]
    assert keytempo.transpose_label("F#:min", 12) == "F#:min"


def test_the_chroma_of_transposed_chords_is_the_chroma_rotated():
    segments = [ChordSegment(0.0, 3.0, "D:min7"), ChordSegment(3.0, 5.5, "G:7"), ChordSegment(5.5, 8.0, "N")]
    for semitones in (-3, 4):
        moved = chords.segments_to_chroma(keytempo.transpose_segments(segments, semitones), 8.0)
        assert np.array_equal(moved, np.roll(chords.segments_to_chroma(segments, 8.0), semitones, axis=1))


def test_the_plan_checks_tempo_against_the_songs_and_says_the_range():
    assert keytempo.plan(0, None, 120.0) == keytempo.KeyTempo(0, 1.0, 120.0, None)
    change = keytempo.plan(-2, 100.0, 120.0)
    assert change.factor == pytest.approx(1.2) and change.changes_key and change.changes_tempo
    assert not keytempo.plan(0, 120.0, 120.0).changes_tempo
    assert keytempo.plan(0, 84.0, 120.0).factor == pytest.approx(120 / 84)  # 0.7x and 1.4x are allowed
    assert keytempo.plan(0, 168.0, 120.0).factor == pytest.approx(120 / 168)
    with pytest.raises(keytempo.KeyTempoError, match=r"0.7x to 1.4x the song's tempo of 120.0 bpm, i.e. 84.0 to "
                                                     r"168.0 bpm; got 360"):
        keytempo.plan(0, 360.0, 120.0)
    with pytest.raises(keytempo.KeyTempoError, match="no beat was found"):
        keytempo.plan(0, 100.0, None)


def test_scaling_moves_every_time_and_divides_the_tempo():
    found = rhythm.Rhythm(120.0, [0.5, 1.0, 1.5], [0.5, 2.5], [1, 2, 3], [rhythm.Section(0.0, 4.0, "verse")])
    scaled, segments, duration = keytempo.apply(keytempo.KeyTempo(3, 1.25, 120.0, 96.0), found,
                                                [ChordSegment(0.0, 2.0, "C"), ChordSegment(2.0, 4.0, "A:min")], 4.0)
    assert scaled.bpm == pytest.approx(96.0) and scaled.beats == pytest.approx([0.625, 1.25, 1.875])
    assert scaled.downbeats == pytest.approx([0.625, 3.125]) and scaled.beat_positions == [1, 2, 3]
    assert (scaled.sections[0].start, scaled.sections[0].end) == pytest.approx((0.0, 5.0))
    assert [(s.start, s.end, s.label) for s in segments] == [(0.0, 2.5, "D#"), (2.5, 5.0, "C:min")]
    assert duration == pytest.approx(5.0)


# --- the vocals: pitch, formants, onsets ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sung():
    return voice.vowel(196.0, 2.0)[None]


@pytest.mark.parametrize("semitones", [4, -5])
def test_shifted_vowel_has_the_expected_pitch_and_keeps_its_formants(sung, semitones):
    shifted = keytempo.shift_pitch(sung, RATE, semitones)
    assert shifted.shape == sung.shape
    assert abs(voice.cents(voice.median_f0(shifted), 196.0 * 2 ** (semitones / 12))) < 10
    # Formants kept: the envelope moves by at most 4.5 dB RMS (measured 2.1 / 3.2), under half of what the
    # shifter alone leaves (7.9 / 9.4 dB: formants moved with the pitch).
    kept = voice.envelope_distance_db(sung, shifted)
    moved = voice.envelope_distance_db(sung, keytempo.shift_pitch(sung, RATE, semitones, keep_formants=False))
    assert kept < 4.5 and kept < 0.5 * moved, (kept, moved)
    # No modulation of the steady vowel: energy off its harmonics stays under -40 dB (measured -50 .. -56).
    assert voice.artefact_db(shifted, 196.0 * 2 ** (semitones / 12)) < -40


def test_shifted_syllables_keep_their_onsets():
    song = voice.syllables(SYLLABLES, SECONDS)[None]
    for semitones in (3, -4):
        errors = voice.onset_errors_ms(keytempo.shift_pitch(song, RATE, semitones), SYLLABLES)
        assert np.all(np.abs(errors) < 5.0), errors


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_stretched_vocals_have_the_scaled_length_onsets_and_the_same_pitch(factor, sung):
    song = voice.syllables(SYLLABLES, SECONDS)[None]
    stretched = keytempo.stretch_time(song, RATE, factor)
    assert stretched.shape == (1, int(round(song.shape[1] * factor)))
    errors = voice.onset_errors_ms(stretched, SYLLABLES * factor)
    assert np.all(np.abs(errors) < 10.0), errors
    assert abs(voice.cents(voice.median_f0(keytempo.stretch_time(sung, RATE, factor)), 196.0)) < 10


def test_no_change_leaves_the_vocals_untouched(sung):
    assert keytempo.retune(sung, RATE, keytempo.KeyTempo()) is sung


def test_retune_moves_the_key_then_the_tempo_of_what_it_is_given(sung):
    """The vocals' path in a remix: transposed (pitch up 3 semitones, formants kept), stretched to the new
    timeline (x1.1: the length scaled, pitch kept), float32 like every stem."""
    change = keytempo.KeyTempo(transpose=3, factor=1.1)
    out = keytempo.retune(sung, RATE, change)
    assert out.dtype == np.float32 and out.shape == (1, int(round(sung.shape[1] * 1.1)))
    assert abs(voice.cents(voice.median_f0(out), 196.0 * 2 ** (3 / 12))) < 10
    only_key = keytempo.retune(sung, RATE, keytempo.KeyTempo(transpose=-2))
    assert only_key.shape == sung.shape and abs(voice.cents(voice.median_f0(only_key), 196.0 * 2 ** (-2 / 12))) < 10


def test_a_short_stretch_is_padded_with_silence_at_its_end():
    fitted = keytempo._fit(np.ones((2, 5), np.float32), 8)
    assert fitted.shape == (2, 8) and fitted[:, :5].all() and not fitted[:, 5:].any()
    assert keytempo._fit(np.ones((2, 5), np.float32), 3).shape == (2, 3)


def test_the_envelope_is_the_cepstrally_smoothed_peak_magnitude_in_db():
    """_envelope_db against the rule written out here: a running maximum over PEAK_BINS bins, a floor
    FLOOR_DB under each frame's own peak, then only the quefrencies under `lifter` (both ends of the real
    cepstrum, symmetric) kept; in dB."""
    from scipy.ndimage import maximum_filter1d

    rng = np.random.default_rng(0)
    spectrum = rng.random((1025, 2)) * np.array([1.0, 100.0])  # two frames, peaks 40 dB apart
    spectrum[600:, 0] = 0.0  # silent bins: held at the floor under that frame's peak
    for lifter in (1, 7, 66):
        peaks = maximum_filter1d(spectrum, size=keytempo.PEAK_BINS, axis=0)
        floored = np.maximum(peaks, peaks.max(axis=0) * 10 ** (-keytempo.FLOOR_DB / 20))
        cepstrum = np.fft.irfft(np.log(floored + 1e-9), axis=0)
        quefrency = np.arange(cepstrum.shape[0])
        cepstrum[np.minimum(quefrency, cepstrum.shape[0] - quefrency) >= lifter] = 0.0
        expected = 20 * np.log10(np.e) * np.fft.rfft(cepstrum, axis=0).real
        np.testing.assert_allclose(keytempo._envelope_db(spectrum, lifter), expected, atol=1e-9)
    flat = keytempo._envelope_db(np.full((1025, 1), 10.0), 66)
    np.testing.assert_allclose(flat, 20.0, atol=1e-6)  # a flat magnitude of 10 is 20 dB everywhere


def test_analysis_json_says_the_change_in_its_own_words():
    assert keytempo.KeyTempo(transpose=2, factor=1.25, song_bpm=120.0, tempo=96.0).as_dict() == {
        "transpose": 2, "original_bpm": 120.0, "bpm": 96.0, "time_factor": 1.25}
    assert keytempo.KeyTempo(transpose=-1, song_bpm=120.0).as_dict() == {
        "transpose": -1, "original_bpm": 120.0, "bpm": 120.0, "time_factor": 1.0}  # no tempo asked: the song's


def test_transposing_by_octaves_keeps_the_label_as_written():
    assert keytempo.transpose_label("Db:min/b3", 12) == "Db:min/b3"
    assert keytempo.transpose_label("Db:min/b3", -24) == "Db:min/b3"
    assert keytempo.transpose_label("Db:min/b3", 1) == "D:min/b3"


# --- inputs ------------------------------------------------------------------------------------------------


def test_transpose_and_tempo_are_checked_with_what_is_accepted(tmp_path):
    song = tmp_path / "song.wav"
    sf.write(song, np.zeros((RATE, 2), np.float32), RATE)
    for values, message in [({"transpose": 13}, "transpose must be <= 12"), ({"transpose": -13}, ">= -12"),
                            ({"transpose": 1.5}, "transpose: 1.5 is not a int"),
                            ({"tempo": 0}, "tempo must be a positive bpm"), ({"tempo": "fast"}, "not a float")]:
        with pytest.raises(RequestError, match=message):
            RemixRequest.from_inputs(prompt="x", music_input=song, **values)
    request = RemixRequest.from_inputs(prompt="x", music_input=song, transpose="-3", tempo="-1")
    assert (request.transpose, request.tempo) == (-3, None)


# --- the pipeline (fixed stages: the wiring) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    from tests.conftest import write_song

    return write_song(tmp_path_factory.mktemp("keytempo") / "song.wav", SECONDS, 220, 330)


def _fixed_rhythm(generated_downbeats):
    """The rhythm stage fixed: the song at 120 bpm on its first call, the generated music's downbeats next."""

    def fixed(call, _real, _stems):
        downbeats = SONG_DOWNBEATS if call == 1 else generated_downbeats
        beats = sorted({t + k * 0.5 for t in downbeats for k in range(4)})
        return rhythm.Rhythm(bpm=120.0, beats=beats, downbeats=list(downbeats),
                             sections=[rhythm.Section(0.0, SECONDS, "verse")])

    return fixed


def _sung_vocals(call, stems, *_args):
    """The separation fixed for the song (its first call): vocals are syllables at SYLLABLES, 196 Hz."""
    if call != 1:
        return stems
    sung = voice.syllables(SYLLABLES, SECONDS, f0=196.0, length=0.6)
    return separation.Stems({**stems, "vocals": np.stack([sung, sung])})


def _remix(remixer, song, tmp_path, monkeypatch, generated_downbeats=(0.4, 2.3, 4.2, 6.1), **inputs):
    monkeypatch.setattr(remixer.analyzer, "analyze", Spy(remixer.analyzer.analyze, _fixed_rhythm(generated_downbeats)))
    monkeypatch.setattr(remixer.separator, "separate", Spy(remixer.separator.separate, _sung_vocals))
    recognizer = remixer.recognizers[True]
    known = [ChordSegment(0.0, 3.0, "D:min7"), ChordSegment(3.0, 5.5, "G:7"), ChordSegment(5.5, SECONDS, "C:maj7")]
    monkeypatch.setattr(recognizer, "recognize", Spy(recognizer.recognize, lambda *_a, **_k: list(known)))

    def clicks_instead(_call, made, *args, **kwargs):
        return [generation.Generated(g.tokens, _clicks(generated_downbeats, g.audio.shape[1], g.sample_rate,
                                                       g.audio.shape[0]), g.sample_rate, g.seed) for g in made]

    generate = Spy(generation.generate_takes, clicks_instead)
    monkeypatch.setattr(generation, "generate_takes", generate)
    prepare = Spy(mix.prepare_vocals)
    monkeypatch.setattr(mix, "prepare_vocals", prepare)
    request = RemixRequest.from_inputs(prompt="funk", music_input=song, model_version="chord", seed=3,
                                       return_instrumental=True, return_analysis=True, normalization_strategy="peak",
                                       **inputs)
    result = remixer.remix(request, tmp_path)
    return result, generate, prepare, known


def test_wiring_transpose_reaches_generation_the_analysis_and_the_vocals(tiny_remixer, song, tmp_path, monkeypatch):
    """Fixed: rhythm (120 bpm), the song's vocals (sung syllables), its chords, the generated music (clicks)."""
    result, generate, prepare, known = _remix(tiny_remixer, song, tmp_path, monkeypatch, transpose=-2)
    (_model, _prompt, chroma, duration, _sampling), kwargs = generate.calls[0]
    assert np.array_equal(chroma, np.roll(chords.segments_to_chroma(known, SECONDS), -2, axis=1))
    assert duration == pytest.approx(SECONDS) and kwargs["bpm"] == 120.0
    report = json.loads(result.analysis_json.read_text())
    assert [c["label"] for c in report["chords"]] == ["C:min7", "F:7", "A#:maj7"]
    assert report["key_tempo"] == {"transpose": -2, "original_bpm": 120.0, "bpm": 120.0, "time_factor": 1.0}
    (vocals, vocals_rate, *_), _ = prepare.calls[0]
    assert vocals_rate == separation.SAMPLE_RATE and vocals.shape == (2, int(SECONDS * RATE))
    assert abs(voice.cents(voice.median_f0(vocals[:, :int(2.5 * RATE)]), 196.0 * 2 ** (-2 / 12))) < 10
    assert np.all(np.abs(voice.onset_errors_ms(vocals, SYLLABLES)) < 5.0)


def test_wiring_tempo_scales_the_song_and_lands_the_band_on_the_scaled_downbeats(
        tiny_remixer, song, tmp_path, monkeypatch):
    """Fixed: as above; the new tempo 100 bpm scales the song's 120 bpm timeline by 1.2."""
    factor = 1.2
    scaled = [t * factor for t in SONG_DOWNBEATS]
    result, generate, prepare, _ = _remix(tiny_remixer, song, tmp_path, monkeypatch, tempo=100.0,
                                          generated_downbeats=(0.5, 2.9, 5.3, 7.7))
    (_model, _prompt, chroma, duration, _sampling), kwargs = generate.calls[0]
    assert duration == pytest.approx(SECONDS * factor) and kwargs["bpm"] == pytest.approx(100.0)
    assert chroma.shape[0] == chords.frame_count(SECONDS * factor)
    # The band (clicks on its downbeats) lands on the song's scaled downbeats, output the scaled length.
    instrumental, rate = sf.read(result.instrumental, dtype="float32", always_2d=True)
    assert rate == 44100 and instrumental.shape[0] == int(round(SECONDS * factor * rate))  # the song's rate
    clicks = _click_times(instrumental.T, rate)
    assert len(clicks) == len(scaled) and np.max(np.abs(np.array(clicks) - scaled)) < 0.003, clicks
    remix, _ = sf.read(result.remix, dtype="float32", always_2d=True)
    assert remix.shape == instrumental.shape
    # The vocals are stretched: onsets where the scale puts them, pitch kept.
    (vocals, *_), _ = prepare.calls[0]
    assert vocals.shape[1] == int(round(SECONDS * RATE * factor))
    assert np.all(np.abs(voice.onset_errors_ms(vocals, SYLLABLES * factor)) < 10.0)
    assert abs(voice.cents(voice.median_f0(vocals[:, :int(3 * RATE)]), 196.0)) < 10
    report = json.loads(result.analysis_json.read_text())
    assert report["key_tempo"] == {"transpose": 0, "original_bpm": 120.0, "bpm": 100.0,
                                   "time_factor": pytest.approx(factor)}
    assert report["downbeats"] == pytest.approx(scaled) and report["bpm"] == pytest.approx(100.0)
    assert report["duration"] == pytest.approx(SECONDS * factor) and report["prompt"] == "funk, bpm : 100"


def test_wiring_the_songs_own_tempo_and_no_transpose_change_nothing(tiny_remixer, song, tmp_path, monkeypatch):
    """Fixed: as above. tempo = the detected 120 bpm and transpose=0 give the remix of a plain request."""
    plain, *_ = _remix(tiny_remixer, song, tmp_path / "plain", monkeypatch)
    same, *_ = _remix(tiny_remixer, song, tmp_path / "same", monkeypatch, tempo=120.0, transpose=0)
    assert same.remix.read_bytes() == plain.remix.read_bytes()
    assert same.instrumental.read_bytes() == plain.instrumental.read_bytes()


def test_tempo_on_a_song_without_a_beat_is_refused_clearly(tiny_remixer, song, tmp_path):
    """Real stages: All-In-One with random weights finds no beat."""
    request = RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord", seed=1, tempo=100)
    with pytest.raises(keytempo.KeyTempoError, match="no beat was found in it: leave tempo unset"):
        tiny_remixer.remix(request, tmp_path)


def test_wiring_a_tempo_out_of_range_is_refused_with_the_songs_tempo(tiny_remixer, song, tmp_path, monkeypatch):
    """Fixed: rhythm (120 bpm). 3x the song's tempo: refused after the analysis, saying the range."""
    monkeypatch.setattr(tiny_remixer.analyzer, "analyze",
                        Spy(tiny_remixer.analyzer.analyze, _fixed_rhythm((0.4, 2.3, 4.2, 6.1))))
    request = RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord", seed=1, tempo=360)
    with pytest.raises(keytempo.KeyTempoError, match=r"song's tempo of 120.0 bpm, i.e. 84.0 to 168.0 bpm; got 360"):
        tiny_remixer.remix(request, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written
