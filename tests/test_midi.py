"""return_midi's file (remixer.midi), written with mido and read back with another reader (pretty_midi): the
tempo map puts every detected beat on a beat of the grid and every downbeat on a bar line; the chords are
their labels' pitch classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from btc import ChordSegment
from remixer import midi
from remixer.chords import chord_to_pitch_classes, root_pitch_class
from remixer.rhythm import Section


def _song(meter: int = 4, first: float = 0.43, bars: int = 8, bpm: float = 118.0, drift: float = 0.004):
    """Beats with a drifting tempo (each beat a little longer), the first bar a pickup of one beat."""
    beats, t, interval = [], first, 60.0 / bpm
    for _ in range(bars * meter + 1):
        beats.append(round(t, 4))
        t += interval
        interval *= 1 + drift
    downbeats = beats[1::meter]  # beat 0 is a pickup
    return beats, downbeats


def _read(path: Path) -> pretty_midi.PrettyMIDI:
    return pretty_midi.PrettyMIDI(str(path))


def midi_markers(path: Path) -> list[tuple[float, str]]:
    """A MIDI file's section markers as (seconds, label), timed by pretty_midi's own tempo map (pretty_midi
    does not read markers; mido does)."""
    import mido

    timed, found, tick = _read(path), [], 0
    for message in mido.MidiFile(str(path)).tracks[0]:
        tick += message.time
        if message.type == "marker":
            found.append((timed.tick_to_time(tick), message.text))
    return found


def assert_beats_and_bars_on_the_grid(read: pretty_midi.PrettyMIDI, beats, downbeats) -> None:
    """Every beat a beat of the file's grid to 1 ms (after the lead-in's), every downbeat one of its bar lines."""
    grid = read.get_beats()
    first = int(np.argmin(np.abs(grid - beats[0])))
    np.testing.assert_allclose(grid[first:first + len(beats)], beats, atol=1e-3)
    bar_lines = read.get_downbeats()
    assert all(np.min(np.abs(bar_lines - d)) < 1e-3 for d in downbeats)


@pytest.mark.parametrize("meter", [3, 4])
def test_every_beat_and_bar_of_the_song_lands_on_the_grid(tmp_path, meter):
    beats, downbeats = _song(meter)
    chords = [ChordSegment(0.0, downbeats[1], "N"), ChordSegment(downbeats[1], downbeats[3], "A:min7"),
              ChordSegment(downbeats[3], downbeats[5], "C:(1,b3,5)"), ChordSegment(downbeats[5], beats[-1] + 0.5, "G/B")]
    path = midi.write_midi(tmp_path / "song.mid", beats, downbeats, meter, chords,
                           [Section(0.0, downbeats[4], "verse"), Section(downbeats[4], beats[-1], "chorus")],
                           duration=beats[-1] + 0.5)
    read = _read(path)
    grid = read.get_beats()
    # Each detected beat is a beat of the grid (to 1 ms); before it, the lead-in's one beat at time 0.
    assert grid[0] == 0.0
    np.testing.assert_allclose(grid[1:len(beats) + 1], beats, atol=1e-3)
    # Each downbeat is a bar line: the bar lines after the pickup bar (lead-in + one beat) are the downbeats.
    bar_lines = read.get_downbeats()
    assert bar_lines[0] == 0.0
    np.testing.assert_allclose(bar_lines[1:len(downbeats) + 1], downbeats, atol=1e-3)
    assert [ts.numerator for ts in read.time_signature_changes] == [2, meter]  # the pickup bar, then the meter
    # The chords: one voicing per segment, its notes the label's pitch classes, its span the segment's.
    notes = sorted(read.instruments[0].notes, key=lambda n: (n.start, n.pitch))
    for segment in chords[1:]:
        played = [n for n in notes if abs(n.start - segment.start) < 2e-3]
        assert played and all(abs(n.end - segment.end) < 2e-3 for n in played)
        classes = [0] * 12
        for note in played:
            classes[note.pitch % 12] = 1
        assert classes == chord_to_pitch_classes(segment.label), segment.label
        assert min(n.pitch for n in played) % 12 == root_pitch_class(segment.label)  # the root in the bass
    assert not [n for n in notes if n.start < downbeats[1] - 2e-3]  # N plays nothing
    data = path.read_bytes()
    assert data[8:10] == b"\x00\x01"  # format 1
    assert b"\xff\x06\x05verse" in data and b"\xff\x06\x06chorus" in data  # the section markers


def test_a_song_whose_first_beat_is_at_zero_needs_no_lead_in(tmp_path):
    beats = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    path = midi.write_midi(tmp_path / "song.mid", beats, beats[::4], 4, [ChordSegment(0.0, 4.5, "E")], [], 4.5)
    read = _read(path)
    np.testing.assert_allclose(read.get_beats()[:len(beats)], beats, atol=1e-3)
    np.testing.assert_allclose(read.get_downbeats()[:3], [0.0, 2.0, 4.0], atol=1e-3)
    assert sorted(n.pitch % 12 for n in read.instruments[0].notes) == [4, 8, 11]


def test_without_beats_the_chords_keep_their_times_on_a_plain_grid(tmp_path):
    path = midi.write_midi(tmp_path / "song.mid", [], [], None,
                           [ChordSegment(0.0, 1.3, "C"), ChordSegment(1.3, 2.9, "F:maj7")], [], 3.0)
    read = _read(path)
    assert read.get_tempo_changes()[1][0] == pytest.approx(midi.FALLBACK_BPM)
    starts = sorted({round(n.start, 3) for n in read.instruments[0].notes})
    assert starts == pytest.approx([0.0, 1.3], abs=2e-3)


def test_one_detected_beat_writes_a_file_a_reader_accepts(tmp_path):
    """One beat (a downbeat) is no tempo and no bar: the plain grid and one 4/4, never a 0-beat bar (a time
    signature with numerator 0, which pretty_midi refuses)."""
    for beat in (0.3, 0.9):
        path = midi.write_midi(tmp_path / f"one{beat}.mid", [beat], [beat], None, [ChordSegment(0.0, 2.0, "C")], [],
                               2.0)
        read = _read(path)
        assert [(ts.numerator, ts.denominator) for ts in read.time_signature_changes] == [(4, 4)]
        assert read.get_tempo_changes()[1].tolist() == pytest.approx([midi.FALLBACK_BPM])


def test_a_first_beat_in_the_first_60_ms_needs_no_impossible_tempo(tmp_path):
    """A first beat at 12 ms: a lead-in beat of 12 ms would be 5000 bpm, which a DAW clamps (Live: 999 bpm),
    moving every later beat. It is written at time 0 instead: every tempo <= MAX_BPM, every later beat and bar
    line within 1 ms of the song's, every bar a real length."""
    first, interval = 0.012, 0.5
    beats = [round(first + k * interval, 4) for k in range(17)]
    downbeats = beats[::4]
    path = midi.write_midi(tmp_path / "song.mid", beats, downbeats, 4, [ChordSegment(0.0, 8.5, "A:min")], [], 8.5)
    read = _read(path)
    assert max(read.get_tempo_changes()[1]) <= midi.MAX_BPM
    grid = read.get_beats()
    assert grid[0] == 0.0  # the first beat, 12 ms early
    np.testing.assert_allclose(grid[1:len(beats)], beats[1:], atol=1e-3)
    np.testing.assert_allclose(read.get_downbeats()[:len(downbeats)], [0.0] + downbeats[1:], atol=1e-3)
    assert [ts.numerator for ts in read.time_signature_changes] == [4]
    # At the limit itself the lead-in stays: a beat of 61 ms (984 bpm) keeps the first beat where it was.
    later = [round(0.061 + k * interval, 4) for k in range(9)]
    kept = _read(midi.write_midi(tmp_path / "later.mid", later, later[::4], 4, [ChordSegment(0.0, 4.5, "C")], [],
                                 4.5))
    assert max(kept.get_tempo_changes()[1]) <= midi.MAX_BPM
    np.testing.assert_allclose(kept.get_beats()[1:len(later) + 1], later, atol=1e-3)


def test_a_long_lead_in_a_meter_from_the_bars_and_times_past_the_last_beat(tmp_path):
    """The first beat at 1.6 s (three lead-in beats of 0.533 s, one tempo), no meter given (bars of three from
    the downbeats, the last bar as long as the one before), a chord and a section marker after the last beat
    (the last tempo goes on). Read back by pretty_midi and mido: the tracks as a DAW lists them."""
    import mido

    beats = [round(1.6 + 0.5 * k, 4) for k in range(12)]  # the last beat at 7.1 s
    downbeats = beats[::3]
    chords = [ChordSegment(0.0, 2.0, "C"), ChordSegment(2.0, 7.6, "A:min"), ChordSegment(7.6, 8.5, "G")]
    sections = [Section(1.6, 4.0, "verse"), Section(7.85, 9.0, "outro")]
    path = midi.write_midi(tmp_path / "song.mid", beats, downbeats, None, chords, sections, 9.0)
    read = _read(path)
    grid = read.get_beats()
    np.testing.assert_allclose(grid[:3], [0.0, 1.6 / 3, 3.2 / 3], atol=1e-3)  # the lead-in, evenly spread
    np.testing.assert_allclose(grid[3:15], beats, atol=1e-3)
    np.testing.assert_allclose(grid[15:17], [7.6, 8.1], atol=1e-3)  # past the last beat: its tempo goes on
    times, tempi = read.get_tempo_changes()
    np.testing.assert_allclose(times[:2], [0.0, 1.6], atol=1e-3)
    np.testing.assert_allclose(tempi[:2], [60 / (1.6 / 3), 120.0], rtol=1e-3)
    assert [(ts.numerator, round(ts.time, 3)) for ts in read.time_signature_changes] == [(3, 0.0)]
    np.testing.assert_allclose(read.get_downbeats()[:6], [0.0, 1.6, 3.1, 4.6, 6.1, 7.6], atol=1e-3)
    notes = read.instruments[0].notes
    assert {(round(n.start, 3), round(n.end, 3)) for n in notes} == {(0.0, 2.0), (2.0, 7.6), (7.6, 8.5)}
    assert sorted(n.pitch for n in notes if n.start > 7.5) == [55, 71, 74]  # G: G3 in the bass, B4 and D5
    assert all(n.velocity == midi.VELOCITY for n in notes)
    assert read.instruments[0].program == 0 and not read.instruments[0].is_drum  # a piano, channel 1 of 16
    tracks = mido.MidiFile(str(path)).tracks
    assert [track.name for track in tracks] == ["song tempo map", "chords"]
    assert [(round(t, 3), label) for t, label in midi_markers(path)] == [(1.6, "verse"), (7.85, "outro")]
    channels = {m.channel for m in tracks[1] if hasattr(m, "channel")}
    assert channels == {0}


def test_two_beats_are_a_tempo_that_goes_on_after_them(tmp_path):
    """Two detected beats 0.6 s apart: 100 bpm from the first, continued past the second (a chord to 1.8 s
    ends 2 beats after it), not the plain 120 bpm grid."""
    path = midi.write_midi(tmp_path / "two.mid", [0.0, 0.6], [0.0], None, [ChordSegment(0.0, 1.8, "C")], [], 2.0)
    read = _read(path)
    assert read.get_tempo_changes()[1][0] == pytest.approx(100.0)
    assert {round(n.end, 3) for n in read.instruments[0].notes} == {1.8}
