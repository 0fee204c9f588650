"""The song's bars and chords as a standard MIDI file (type 1) a DAW can lay under the remix.

Written with mido (MIT; maintained, the reader/writer most Python MIDI tools build on). Track 0 holds the tempo
map: one `set_tempo` per detected beat (that beat's length), so every beat of the song falls on a beat of the
DAW's grid, and a `time_signature` wherever the bar length changes, so its bar lines fall on the song's
downbeats. Before the first beat a lead-in of whole beats keeps time 0 at the remix's first sample (a first beat
within 60 ms of it is written at 0: a shorter lead-in would be a tempo no DAW takes). Track 1
holds the chords as played voicings (the root in the bass, the other tones above it), one per chord segment;
sections, where the tracker finds them, are markers. Times are the remix's (after `tempo`, with `transpose`'s
chords).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from remixer.chords import Segment, chord_to_pitch_classes, root_pitch_class

TICKS_PER_BEAT = 480
FALLBACK_BPM = 120.0  # the grid when no beat was found: chords keep their times, bars mean nothing
BASS_NOTE = 48  # C3: the root's octave
CHORD_NOTE = 60  # C4: the other tones sit in the octave above the root
VELOCITY = 80
# The fastest tempo a DAW takes: Ableton Live's tempo range is 20-999 bpm (Live's Tempo field). A lead-in beat
# shorter than its beat (60 ms) would be written as a faster tempo that a DAW may clamp, moving every later beat.
MAX_BPM = 999.0
MIN_LEAD_S = 60.0 / MAX_BPM


@dataclass(frozen=True)
class Grid:
    """Beat times (s) and their ticks, with the lead-in before the first beat."""

    times: np.ndarray
    ticks: np.ndarray

    def tick(self, seconds: float) -> int:
        """Seconds on the remix's timeline -> the tick there (linear between beats, the last tempo after)."""
        if seconds >= self.times[-1]:
            spb = (self.times[-1] - self.times[-2]) if len(self.times) > 1 else 60.0 / FALLBACK_BPM
            return int(round(self.ticks[-1] + (seconds - self.times[-1]) / spb * TICKS_PER_BEAT))
        return int(round(np.interp(seconds, self.times, self.ticks)))


def beat_grid(beats: Sequence[float]) -> Grid:
    """Knots of the tempo map: (0 s, tick 0), the lead-in's beats, then one knot per detected beat.

    A first beat within MIN_LEAD_S of the start is written at time 0 (at most 60 ms early, that beat alone):
    a lead-in that short would be a tempo above MAX_BPM."""
    beats = np.asarray([b for b in beats if b >= 0], dtype=np.float64)
    if len(beats) < 2:
        return Grid(np.array([0.0, 60.0 / FALLBACK_BPM]), np.array([0, TICKS_PER_BEAT]))
    if beats[0] < MIN_LEAD_S:
        beats = np.concatenate([[0.0], beats[1:]])
    interval = float(np.median(np.diff(beats)))
    lead = max(1, int(round(beats[0] / interval))) if beats[0] > 1e-6 else 0
    times = np.concatenate([[0.0] if lead else [], beats])
    ticks = np.concatenate([[0] if lead else [], (lead + np.arange(len(beats))) * TICKS_PER_BEAT])
    if lead > 1:  # the lead-in's own beats, evenly spread, so its tempo is one tempo
        inner = np.linspace(0.0, beats[0], lead + 1)[1:-1]
        times = np.concatenate([[0.0], inner, beats])
        ticks = np.concatenate([[0], np.arange(1, lead) * TICKS_PER_BEAT, ticks[1:]])
    return Grid(times, ticks.astype(np.int64))


def _bar_lengths(grid: Grid, beats: Sequence[float], downbeats: Sequence[float], meter: int | None
                 ) -> list[tuple[int, int]]:
    """(tick, beats in the bar) where the bar length changes: the lead-in and pickup before the first downbeat
    as one short bar, then each downbeat's bar up to the next (the last one as long as the meter). Downbeats sit
    on grid beats (a first beat moved to time 0 included); with fewer than two beats there are no bars."""
    on_beats = {round(b, 6) for b in beats}
    starts = sorted({int(round(grid.tick(d) / TICKS_PER_BEAT)) * TICKS_PER_BEAT
                     for d in downbeats if round(d, 6) in on_beats})
    if not starts or len([b for b in beats if b >= 0]) < 2:
        return [(0, meter or 4)]
    bars = [(0, starts[0] // TICKS_PER_BEAT)] if starts[0] > 0 else []
    bars += [(here, max(1, (following - here) // TICKS_PER_BEAT)) for here, following in zip(starts, starts[1:])]
    bars.append((starts[-1], meter or (bars[-1][1] if bars else 4)))
    return [bar for i, bar in enumerate(bars) if i == 0 or bar[1] != bars[i - 1][1]]


def voicing(label: str) -> list[int]:
    """MIDI notes of a chord label: its root in the bass octave, every other tone in the octave above the root."""
    classes = [pc for pc, on in enumerate(chord_to_pitch_classes(label)) if on]
    if not classes:
        return []
    root = root_pitch_class(label)
    return [BASS_NOTE + root] + sorted(CHORD_NOTE + root + (pc - root) % 12 for pc in classes if pc != root)


def write_midi(path: Path, beats: Sequence[float], downbeats: Sequence[float], meter: int | None,
               chords: Sequence[Segment], sections: Sequence[Segment], duration: float) -> Path:
    """A type-1 MIDI file: tempo map and bars (track 0), chords (track 1), section markers (track 0)."""
    import mido

    grid = beat_grid(beats)
    events: list[tuple[int, int, mido.MetaMessage]] = []  # (tick, order, message): meter before tempo
    for tick, length in _bar_lengths(grid, beats, downbeats, meter):
        events.append((tick, 0, mido.MetaMessage("time_signature", numerator=length, denominator=4)))
    for i in range(len(grid.times)):
        nxt = grid.times[i + 1] - grid.times[i] if i + 1 < len(grid.times) else (
            grid.times[i] - grid.times[i - 1] if i > 0 else 60.0 / FALLBACK_BPM)
        per_tick = nxt / ((grid.ticks[i + 1] - grid.ticks[i]) / TICKS_PER_BEAT) if i + 1 < len(grid.times) else nxt
        events.append((int(grid.ticks[i]), 1, mido.MetaMessage("set_tempo", tempo=max(1, int(round(per_tick * 1e6))))))
    for section in sections:
        events.append((grid.tick(section.start), 2, mido.MetaMessage("marker", text=section.label)))
    conductor = mido.MidiTrack([mido.MetaMessage("track_name", name="song tempo map", time=0)])
    conductor += _delta(events)
    conductor.append(mido.MetaMessage("end_of_track", time=0))

    notes: list[tuple[int, int, mido.Message]] = []
    for segment in chords:
        start, end = grid.tick(segment.start), grid.tick(min(segment.end, duration))
        if end <= start:
            continue
        for note in voicing(segment.label):
            notes.append((start, 1, mido.Message("note_on", note=note, velocity=VELOCITY, channel=0)))
            notes.append((end, 0, mido.Message("note_off", note=note, velocity=0, channel=0)))
    chord_track = mido.MidiTrack([mido.MetaMessage("track_name", name="chords", time=0),
                                  mido.Message("program_change", program=0, channel=0, time=0)])
    chord_track += _delta(notes)
    chord_track.append(mido.MetaMessage("end_of_track", time=0))
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT, tracks=[conductor, chord_track])
    midi.save(str(path))
    return path


def _delta(events):
    """Absolute-tick events -> messages with delta times, in tick order (note-offs before note-ons at a tick)."""
    out, now = [], 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
        out.append(message.copy(time=tick - now))
        now = tick
    return out
