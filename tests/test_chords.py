"""Chord labels -> multi-hot chord chroma (remixer.chords)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import btc
from btc import ChordSegment
from remixer.chords import (
    ChordError,
    chord_to_pitch_classes,
    segments_to_chroma,
    window_chroma,
)
from remixer.request import RemixRequest, RequestError
from tests.conftest import SHARED

NOTE = {"C": 0, "C#": 1, "D": 2, "D#": 3, "E": 4, "F": 5, "F#": 6, "G": 7, "G#": 8, "A": 9, "A#": 10, "B": 11}
DEGREE = {"1": 0, "b2": 1, "2": 2, "b3": 3, "3": 4, "4": 5, "b5": 6, "5": 7, "#5": 8, "6": 9, "bb7": 9, "b7": 10, "7": 11}
# Chord qualities spelled as scale degrees (music theory, written independently of the code).
SPELLING = {
    "maj": "1 3 5", "min": "1 b3 5", "dim": "1 b3 b5", "aug": "1 3 #5", "min6": "1 b3 5 6",
    "maj6": "1 3 5 6", "min7": "1 b3 5 b7", "minmaj7": "1 b3 5 7", "maj7": "1 3 5 7", "7": "1 3 5 b7",
    "dim7": "1 b3 b5 bb7", "hdim7": "1 b3 b5 b7", "sus2": "1 2 5", "sus4": "1 4 5",
}


def pcs(*notes: str) -> list[int]:
    vector = [0] * 12
    for note in notes:
        vector[NOTE[note]] = 1
    return vector


def expected_for(label: str) -> list[int]:
    if label in {"N", "X"}:
        return [0] * 12
    root, _, quality = label.partition(":")
    vector = [0] * 12
    for degree in SPELLING[quality or "maj"].split():
        vector[(NOTE[root] + DEGREE[degree]) % 12] = 1
    return vector


@pytest.mark.parametrize("label", btc.LARGE_VOCABULARY + btc.MAJMIN_VOCABULARY)
def test_every_vocabulary_label_has_the_pitch_classes_its_name_says(label):
    assert chord_to_pitch_classes(label) == expected_for(label)


@pytest.mark.parametrize("label,notes", [
    ("C", ("C", "E", "G")), ("A:min", ("A", "C", "E")), ("G:7", ("G", "B", "D", "F")),
    ("F#:hdim7", ("F#", "A", "C", "E")), ("Bb:maj7", ("A#", "D", "F", "A")), ("D:sus4", ("D", "G", "A")),
    ("Db", ("C#", "F", "G#")), ("E#", ("F", "A", "C")), ("Cb:min", ("B", "D", "F#")),
    ("C/E", ("C", "E", "G")), ("A:min/C", ("A", "C", "E")), ("G:7/3", ("G", "B", "D", "F")),
])
def test_user_syntax(label, notes):
    assert chord_to_pitch_classes(label) == pcs(*notes)


@pytest.mark.parametrize("label", ["N", "X", " N "])
def test_no_chord_is_silent(label):
    assert chord_to_pitch_classes(label) == [0] * 12


@pytest.mark.parametrize("label,named", [("H:min", "'H:min'"), ("C:mystery", "'mystery'"), ("", "''"),
                                         ("C/Q", "'C/Q'"), ("c", "'c'")])
def test_unknown_syntax_names_the_token(label, named):
    with pytest.raises(ChordError, match=named):
        chord_to_pitch_classes(label)


def test_progression_truth_gives_the_right_pitch_classes_on_every_frame():
    segments = btc.read_lab(SHARED / "btc" / "progression_truth.lab")
    chroma = segments_to_chroma(segments, duration=24.0)
    assert chroma.shape == (188, 12)  # 24 s on the 30/235 s grid
    for frame in range(chroma.shape[0]):
        t = frame * 30 / 235
        label = next(s.label for s in segments if s.start <= t < s.end)
        assert chroma[frame].tolist() == expected_for(label), (frame, label)


def test_boundaries_land_on_the_nearest_frame():
    bin_s = 30 / 235
    segments = [ChordSegment(0, 10 * bin_s, "C"), ChordSegment(10 * bin_s, 40 * bin_s, "F#")]
    chroma = segments_to_chroma(segments, 40 * bin_s)
    assert chroma.shape == (40, 12)
    assert all(chroma[f].tolist() == pcs("C", "E", "G") for f in range(10))
    assert all(chroma[f].tolist() == pcs("F#", "A#", "C#") for f in range(10, 40))
    # A boundary 0.4 frame late still rounds to frame 10.
    late = [ChordSegment(0, 10.4 * bin_s, "C"), ChordSegment(10.4 * bin_s, 40 * bin_s, "F#")]
    assert np.array_equal(segments_to_chroma(late, 40 * bin_s), chroma)


def test_smoothing_removes_a_one_frame_blip_and_keeps_a_one_second_chord():
    bin_s = 30 / 235
    blip = [ChordSegment(0, 20 * bin_s, "C"), ChordSegment(20 * bin_s, 21 * bin_s, "F#"),
            ChordSegment(21 * bin_s, 40 * bin_s, "C")]
    chroma = segments_to_chroma(blip, 40 * bin_s)
    assert all(row.tolist() == pcs("C", "E", "G") for row in chroma)

    second = [ChordSegment(0, 10, "C"), ChordSegment(10, 11, "D:min"), ChordSegment(11, 20, "C")]
    chroma = segments_to_chroma(second, 20)
    frames = [f for f in range(chroma.shape[0]) if chroma[f].tolist() == pcs("D", "F", "A")]
    assert len(frames) == 8 and frames[0] == round(10 / bin_s)


def test_coefficient_scales_the_chroma():
    segments = [ChordSegment(0, 5, "G")]
    base = segments_to_chroma(segments, 5)
    for coefficient in (0.5, 1.7, 2.0):
        scaled = segments_to_chroma(segments, 5, coefficient)
        assert np.array_equal(scaled, base * coefficient)
        assert np.allclose(np.unique(scaled), [0.0, coefficient])
    for bad in (0.49, 2.01):  # refused once, by the request (the stage trusts it)
        with pytest.raises(RequestError, match=f"chroma_coefficient must be {'>= 0.5' if bad < 1 else '<= 2.0'}"):
            RemixRequest(prompt="x", music_input=Path(__file__), chroma_coefficient=bad)


def test_window_chroma_slices_the_song_once_recognised():
    bin_s = 30 / 235
    # A different chord every 6 s, so every window's content is checkable.
    labels = ["C", "D", "E", "F", "G", "A", "B", "C#", "D#", "F#"]
    segments = [ChordSegment(6 * i, 6 * (i + 1), label) for i, label in enumerate(labels)]
    song = segments_to_chroma(segments, 60)
    windows = window_chroma(song, [0, 18, 36])
    assert [w.shape for w in windows] == [(235, 12)] * 3
    for start, window in zip([0, 18, 36], windows):
        for frame in range(0, 235, 5):
            t = start + frame * bin_s
            if t >= 60:
                t -= 60  # past the song's end: its chords again from its start, never "no chord"
            label = labels[int(t // 6)]
            if abs(t - 6 * round(t / 6)) > 4 * bin_s:  # away from smoothed boundaries
                assert window[frame].tolist() == expected_for(label), (start, frame)
    assert np.array_equal(windows[0], song[:235])
    assert np.array_equal(windows[1], song[round(18 / bin_s):round(18 / bin_s) + 235])


def test_window_past_the_end_continues_with_the_songs_opening_chroma():
    song = segments_to_chroma([ChordSegment(0, 3, "C"), ChordSegment(3, 6, "A:min"), ChordSegment(6, 40, "F")], 40)
    frames = len(song)  # 314 frames for 40 s
    last = window_chroma(song, [18.0])[0]
    first = round(18 / (30 / 235))
    inside = frames - first
    assert np.array_equal(last[:inside], song[first:])
    assert np.array_equal(last[inside:], song[:235 - inside])  # wraps to the opening bars (C, then A:min)
    assert last[inside:].any(axis=1).all()


def test_song_shorter_than_a_window_is_tiled():
    song = segments_to_chroma([ChordSegment(0, 2, "G"), ChordSegment(2, 4, "E:min")], 4)
    (window,) = window_chroma(song, [0.0])
    assert window.shape == (235, 12)
    for repeat in range(0, 235, len(song)):
        piece = window[repeat:repeat + len(song)]
        assert np.array_equal(piece, song[:len(piece)])
    assert not np.array_equal(window, np.pad(song, ((0, 235 - len(song)), (0, 0))))  # not zero padded


# --- typed chords as Harte writes them, against the MusiConGen reference -----------------------------------

# The MusiConGen reference's chord table (github.com/Cyan0731/MusiConGen, audiocraft/audiocraft/data/btc_chords.py,
# Chords._shorthands), copied as facts: each quality's degree list.
REFERENCE_SHORTHANDS = {
    "maj": "1,3,5", "min": "1,b3,5", "dim": "1,b3,b5", "aug": "1,3,#5", "maj7": "1,3,5,7", "min7": "1,b3,5,b7",
    "7": "1,3,5,b7", "6": "1,6", "5": "1,5", "4": "1,4", "1": "1", "dim7": "1,b3,b5,bb7", "hdim7": "1,b3,b5,b7",
    "minmaj7": "1,b3,5,7", "maj6": "1,3,5,6", "min6": "1,b3,5,6", "9": "1,3,5,b7,9", "maj9": "1,3,5,7,9",
    "min9": "1,b3,5,b7,9", "add9": "1,3,5,9", "sus2": "1,2,5", "sus4": "1,4,5", "7sus2": "1,2,5,b7",
    "7sus4": "1,4,5,b7", "11": "1,3,5,b7,9,11", "min11": "1,b3,5,b7,9,11", "13": "1,3,5,b7,13",
    "maj13": "1,3,5,7,13", "min13": "1,b3,5,b7,13",
}
# Where we part from it on purpose (SPEC 18): `6` is maj6 in common use, (1,6) there.
OURS_NOT_THE_REFERENCE = {"6": "1,3,5,6"}
MAJOR_SCALE = [0, 2, 4, 5, 7, 9, 11]  # degree d (1-based) is MAJOR_SCALE[(d-1) % 7] semitones, then its flats/sharps


def reference_pitch_classes(root: str, degrees: str) -> list[int]:
    vector = [0] * 12
    for degree in degrees.split(","):
        number = int(degree.lstrip("#b"))
        step = MAJOR_SCALE[(number - 1) % 7] + degree.count("#") - degree.count("b")
        vector[(NOTE[root] + step) % 12] = 1
    return vector


@pytest.mark.parametrize("quality", list(REFERENCE_SHORTHANDS))
def test_every_quality_of_the_reference_table_reads_as_its_degrees(quality):
    degrees = OURS_NOT_THE_REFERENCE.get(quality, REFERENCE_SHORTHANDS[quality])
    for root in ("C", "F#", "A"):
        assert chord_to_pitch_classes(f"{root}:{quality}") == reference_pitch_classes(root, degrees), quality
        # The same chord spelled as Harte's degree list.
        assert chord_to_pitch_classes(f"{root}:({degrees})") == reference_pitch_classes(root, degrees)


@pytest.mark.parametrize("label,notes", [
    # SPEC 18, each tried against the reference's chord_intervals.
    ("C:(1,b3,5)", ("C", "D#", "G")), ("C:(1,5)", ("C", "G")), ("C:min(*5)", ("C", "D#")),
    ("C:maj(9)", ("C", "D", "E", "G")), ("C:min7(11)", ("C", "D#", "F", "G", "A#")),
    ("C:sus4(b7)", ("C", "F", "G", "A#")), ("C:7sus4", ("C", "F", "G", "A#")), ("C:add9", ("C", "D", "E", "G")),
    ("C:maj/3", ("C", "E", "G")), ("C:maj/b7", ("C", "E", "G", "A#")), ("A:min(*b3)", ("A", "E")),
    # Ours where the reference is odd: a note name after the slash is that note (all twelve there).
    ("C/E", ("C", "E", "G")), ("C/Bb", ("C", "E", "G", "A#")),
])
def test_harte_degree_lists_omissions_added_tones_and_bass(label, notes):
    assert chord_to_pitch_classes(label) == pcs(*notes)


def test_the_chord_chroma_and_musicongens_frames_hear_the_same_pitch_classes():
    from remixer import conditions

    for label in ("C:(1,b3,5)", "D:min(*5)", "E:maj(9)", "G:7sus4/b7", "Bb:min11", "C/E"):
        chroma = segments_to_chroma([ChordSegment(0.0, 10.0, label)], 10.0)
        frames = conditions.chord_frames([ChordSegment(0.0, 10.0, label)], 500)
        assert chroma[40].tolist() == chord_to_pitch_classes(label) == frames[:, 250].tolist(), label


@pytest.mark.parametrize("label,named", [("C:(1,b3,x)", "degree 'x'"), ("C:maj(15)", "degree '15'"),
                                         ("C:mystery", "add9, 7sus2, 7sus4")])
def test_a_label_that_cannot_be_read_is_refused_with_what_can(label, named):
    with pytest.raises(ChordError, match=named):
        chord_to_pitch_classes(label)


def test_typed_chords_in_harte_syntax_are_accepted_by_the_request(tmp_path):
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF")
    request = RemixRequest.from_inputs(prompt="jazz", music_input=str(song), chords="C:(1,b3,5) G:7sus4 F:maj(9)")
    assert request.chords == "C:(1,b3,5) G:7sus4 F:maj(9)"
    with pytest.raises(RequestError, match="C:\\(1,b3,x\\)"):
        RemixRequest.from_inputs(prompt="jazz", music_input=str(song), chords="C:(1,b3,x)")


# --- the user's chords on the song's bars ---------------------------------------------------------------------


def test_the_bars_user_chords_lie_on_are_the_songs_downbeats_or_its_tempo_from_the_first_beat():
    from remixer import chords

    assert chords.bar_starts([-0.1, 0.5, 2.5, 4.5, 8.0], [], 120.0, 8.0) == [0.5, 2.5, 4.5]  # inside the song
    assert chords.bar_starts([0.0, 2.5], [], 100.0, 8.0) == [0.0, 2.5]  # two bars are enough; 0 is inside
    # Fewer than two downbeats: bars of four beats at the tempo, from the first beat (or 0 without beats).
    assert chords.bar_starts([1.0], [0.25, 0.75], 120.0, 8.0) == pytest.approx([0.25, 2.25, 4.25, 6.25])
    assert chords.bar_starts([], [], 100.0, 5.0) == pytest.approx([0.0, 2.4, 4.8])
    with pytest.raises(chords.ChordError) as refused:
        chords.bar_starts([2.0], [2.0], None, 8.0)
    assert str(refused.value) == ("chords need the song's bars, but no beat was found in it: use a song with a "
                                  "steady beat, or leave chords empty to recognise them")


def test_user_chords_take_one_bar_each_in_order_repeated_the_first_covering_the_pickup():
    from remixer import chords

    laid = chords.lay_on_bars(["C", "G", "A:min"], [0.5, 2.5, 4.5, 6.5], 8.0)
    assert [(c.start, c.end, c.label) for c in laid] == [(0.0, 2.5, "C"), (2.5, 4.5, "G"), (4.5, 6.5, "A:min"),
                                                         (6.5, 8.0, "C")]
    assert [(c.start, c.end) for c in chords.lay_on_bars(["C", "G"], [0.0, 4.0, 8.0], 8.0)] == [(0.0, 4.0),
                                                                                              (4.0, 8.0)]


def test_a_progression_splits_on_spaces_commas_and_bar_lines_but_not_inside_a_degree_list():
    from remixer import chords

    assert chords.parse_progression(" C, G | Am\tF ") == ["C", "G", "Am", "F"]
    assert chords.parse_progression("C:(1,b3,5),G|D:(3,5)") == ["C:(1,b3,5)", "G", "D:(3,5)"]
    with pytest.raises(chords.ChordError) as refused:
        chords.parse_progression(" , | ")
    assert str(refused.value) == "no chords given: write one chord per bar, e.g. 'C G Am F'"


def test_no_chord_has_no_root_and_each_vocabulary_names_its_weights():
    from remixer import chords

    assert chords.root_pitch_class(" N ") is None and chords.root_pitch_class("X") is None
    assert chords.root_pitch_class("Bb:min7") == 10
    assert chords.chord_to_pitch_classes("C:(1,b13)") == [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]  # b13 is Ab
    assert chords.recognizer_component(True) == "btc-large-voca"
    assert chords.recognizer_component(False) == "btc-majmin"
