"""The fidelity scorer: chords (mir_eval majmin, tetrads) and beats (F-measure, 70 ms) on the song's timeline."""

from __future__ import annotations

import numpy as np
import pytest

from btc import ChordSegment
from remixer import beatsync, fidelity
from remixer.chords import harte

PROGRESSION = ["C", "G", "A:min", "F", "C:maj7", "G:7", "A:min7", "F:maj7"]


def song(bars: int = 16, bar_s: float = 2.0, shift: int = 0) -> tuple[list[ChordSegment], list[float]]:
    """Chords one per bar (transposed by `shift` semitones) and four beats per bar at 120 bpm."""
    names = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
    chords = []
    for bar in range(bars):
        label = PROGRESSION[bar % len(PROGRESSION)]
        root, _, quality = label.partition(":")
        moved = names[(names.index(root) + shift) % 12] + (f":{quality}" if quality else "")
        chords.append(ChordSegment(bar * bar_s, (bar + 1) * bar_s, moved))
    beats = [bar * bar_s + k * bar_s / 4 for bar in range(bars) for k in range(4)]
    return chords, beats


def test_a_song_against_itself_scores_one():
    chords, beats = song()
    result = fidelity.measure(chords, beats, chords, beats, fidelity.identity, 32.0)
    assert (result.chord_majmin, result.chord_tetrads, result.beat_f) == (1.0, 1.0, 1.0)
    assert result.score == 1.0 and result.reasons == {}


def test_the_same_song_a_tone_higher_loses_its_chords_but_not_its_beats():
    chords, beats = song()
    higher, _ = song(shift=2)
    result = fidelity.measure(chords, beats, higher, beats, fidelity.identity, 32.0)
    assert result.chord_majmin < 0.2 and result.chord_tetrads < 0.2 and result.beat_f == 1.0


def test_beats_100_ms_late_score_zero():
    chords, beats = song()
    late = [t + 0.1 for t in beats]
    assert fidelity.beat_f(beats, late) == 0.0
    assert fidelity.beat_f(beats, [t + 0.05 for t in beats]) == 1.0  # inside the 70 ms window


def test_times_go_through_the_time_map():
    plan = beatsync.SyncPlan(np.array([[2.0, 10.0], [3.0, 13.0]]))  # generated 2..10 s -> song 3..13 s
    mapped = fidelity.map_segments([ChordSegment(2.0, 6.0, "C"), ChordSegment(6.0, 10.0, "G")], plan.map_time, 20.0)
    assert [(m.start, m.end, m.label) for m in mapped] == [(3.0, 8.0, "C"), (8.0, 13.0, "G")]
    # Generated beats that the map moves onto the song's beats score; unmapped they would not.
    song_beats = [3.0, 5.5, 8.0, 10.5, 13.0]
    generated = [2.0, 4.0, 6.0, 8.0, 10.0]
    result = fidelity.measure([ChordSegment(0, 20, "C")], song_beats, None, generated, plan.map_time, 20.0,
                              why_not="not analysed here")
    assert result.beat_f == 1.0 and fidelity.beat_f(song_beats, generated) < 0.25  # one beat in five by chance
    assert result.chord_majmin is None and result.reasons["chord_majmin"] == "not analysed here"


def test_what_cannot_be_measured_is_none_with_a_reason():
    chords, beats = song()
    no_beats = fidelity.measure(chords, [], chords, beats, fidelity.identity, 32.0)
    assert no_beats.beat_f is None and "no beats were found in the song" in no_beats.reasons["beat_f"]
    none_generated = fidelity.measure(chords, beats, chords, [], fidelity.identity, 32.0)
    assert none_generated.beat_f is None and "generated music" in none_generated.reasons["beat_f"]
    no_chords = fidelity.measure([ChordSegment(0, 32, "N")], beats, chords, beats, fidelity.identity, 32.0)
    assert no_chords.chord_majmin is None and no_chords.beat_f == 1.0
    assert no_chords.score == 1.0  # the score is over what was measured
    assert fidelity.Fidelity().score == 0.0
    assert no_chords.as_dict()["unmeasured"]["chord_majmin"] == "no chords were found in the song"


def test_score_weights_majmin_twice():
    result = fidelity.Fidelity(chord_majmin=1.0, chord_tetrads=0.0, beat_f=0.0)
    assert result.score == pytest.approx(0.5)
    assert fidelity.Fidelity(chord_majmin=0.0, chord_tetrads=1.0, beat_f=1.0).score == pytest.approx(0.5)


@pytest.mark.parametrize("label,expected", [("Am", "A:min"), ("G7", "G:7"), ("C", "C:maj"), ("Bbmaj7", "Bb:maj7"),
                                            ("F#:hdim7", "F#:hdim7"), ("N", "N"), ("X", "X"), ("C/E", "C:maj")])
def test_labels_in_harte_syntax(label, expected):
    assert harte(label) == expected


def test_every_unmeasured_number_says_exactly_why_in_analysis_json():
    """analysis.json's fidelity, whole: each number rounded to 4 places or None, the score, and one reason per
    None (the exact words the docs and the CLI show), for every way a number can be missing."""
    chords, beats = song(bars=2)
    unanalysed = fidelity.measure(chords, beats, None, None, fidelity.identity, 4.0)
    assert unanalysed.as_dict() == {"chord_majmin": None, "chord_tetrads": None, "beat_f": None, "score": 0.0,
                                    "unmeasured": dict.fromkeys(fidelity.NUMBERS,
                                                                "the generated music was not analysed")}
    assert fidelity.measure(chords, beats, None, None, fidelity.identity, 4.0, why_not="w").reasons == \
        dict.fromkeys(fidelity.NUMBERS, "w")
    silent_song = fidelity.measure([ChordSegment(0, 4, "X"), ChordSegment(4, 8, "N")], [], chords, [1.0],
                                   fidelity.identity, 8.0)
    assert silent_song.reasons == {"chord_majmin": "no chords were found in the song",
                                   "chord_tetrads": "no chords were found in the song",
                                   "beat_f": "no beats were found in the song"}
    assert fidelity.measure(chords, beats, chords, [], fidelity.identity, 4.0).reasons == {
        "beat_f": "no beats were found in the generated music"}
    outside = fidelity.measure(chords, beats, chords, [-1.0, 4.5], fidelity.identity, 4.0)
    assert outside.beat_f is None and outside.reasons == {"beat_f": "no generated beat lands inside the song"}
    # A power chord is outside majmin's vocabulary (tetrads compares it): majmin alone has nothing to compare.
    fifths = [ChordSegment(0, 4, "C:5")]
    assert fidelity.measure(fifths, beats, fifths, beats, fidelity.identity, 4.0).reasons == {
        "chord_majmin": "no chord of that vocabulary to compare"}
    rounded = fidelity.Fidelity(0.123456, None, 2 / 3, {"chord_tetrads": "why"}).as_dict()
    assert rounded == {"chord_majmin": 0.1235, "chord_tetrads": None, "beat_f": 0.6667,
                       "score": round((0.5 * 0.123456 + 0.25 * 2 / 3) / 0.75, 4), "unmeasured": {"chord_tetrads": "why"}}


def test_a_beat_at_the_songs_last_instant_counts_and_gaps_in_either_chord_list_are_no_chord():
    assert fidelity.measure([], [1.0, 4.0], None, [1.0, 4.0], fidelity.identity, 4.0).beat_f == 1.0
    # The song has no chord in its first second, the new music none in its last: each gap is no chord (N)
    # against C, a disagreement (1 s each); C against C agrees (2 s): 2 of 4 s, whichever list is the song.
    song_chords = [ChordSegment(1.0, 4.0, "C")]
    generated = [ChordSegment(0.0, 3.0, "C")]
    assert fidelity.chord_scores(song_chords, generated, 4.0) == (pytest.approx(0.5), pytest.approx(0.5))
    assert fidelity.chord_scores(generated, song_chords, 4.0) == (pytest.approx(0.5), pytest.approx(0.5))
    assert fidelity.chord_scores(song_chords, song_chords, 4.0) == (1.0, 1.0)
    assert fidelity.chord_scores(song_chords, generated, 0.0) == (None, None)
    assert fidelity.chord_scores([], generated, 4.0) == (None, None)


def test_the_cli_line_shows_each_number_or_n_a_then_the_score():
    assert fidelity.Fidelity(0.5, None, 1.0).summary() == \
        "chord_majmin 0.50, chord_tetrads n/a, beat_f 1.00 (score 0.67)"
    assert fidelity.Fidelity().summary() == "chord_majmin n/a, chord_tetrads n/a, beat_f n/a (score 0.00)"
