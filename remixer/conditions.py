"""MusiConGen's conditions from the song itself: its chords and its beats as frames at 50 Hz.

MusiConGen (arXiv 2407.15060; github.com/Cyan0731/MusiConGen, MIT) conditions
MusicGen on chords and rhythm. We build both as its training featurizer does
(`data/music_dataset.py`), but from the song's own timeline for the whole song,
where its inference builds the beat from a constant bpm and stops at 30 s:

- chords: 12 values per frame, the chord's tones (slash bass included) rotated
  by its root: 1 on a tone, N all 0, X all -1. A segment covers frames
  int(start * 50) up to int(end * 50), end excluded; a later segment overwrites
  an earlier one; uncovered frames stay 0.
- beats: one value per frame. 1 at each beat's frame int(t * 50), smoothed by
  the kernel [.05, .1, .3, .9, .3, .1, .05] (centred), plus an unsmoothed 1 at
  each downbeat: a beat peaks at 0.9, a downbeat at 1.9. The song's real beat
  times go in, so its tempo drift is in the condition.

The frames are built once for the whole song (the kernel runs over the whole
timeline, so a beat near a window's edge keeps its shape) and each generation
window reads its own slice (`window`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from remixer import musicgen
from remixer.chords import Segment, chord_to_pitch_classes

# One frame per EnCodec token (musicgen's 50 Hz), a float: the reference multiplies seconds by 50.0.
FRAME_RATE = float(musicgen.FRAME_RATE)
WINDOW_FRAMES = 1500  # 30 s: the length the model was trained on
PREFIX_FRAMES = 235  # the chord prefix: the window's chords sampled at round(i * 1500 / 235)
BEAT_KERNEL = np.array([0.05, 0.1, 0.3, 0.9, 0.3, 0.1, 0.05])


@dataclass(frozen=True)
class SongFrames:
    """The whole song's conditions: chord (12, frames) and beat (1, frames), float64, 50 frames per second."""

    chord: np.ndarray
    beat: np.ndarray

    @property
    def frames(self) -> int:
        return self.chord.shape[1]


@dataclass(frozen=True)
class WindowFrames:
    """One generation window's conditions: chord (12, 1500) and beat (1, 1500), and its chord prefix
    (235, 12): the frames the model's prefix samples."""

    chord: np.ndarray
    beat: np.ndarray

    @property
    def prefix(self) -> np.ndarray:
        index = np.round(np.arange(PREFIX_FRAMES) * WINDOW_FRAMES / PREFIX_FRAMES).astype(int)
        return self.chord[:, index].T


def chord_vector(label: str) -> np.ndarray:
    """12 values for a chord label: its tones as absolute pitch classes (N: zeros, X: all -1), read as the
    chord chroma reads them (remixer.chords: Harte's degree lists, omissions and added tones, and the slash
    bass, which the reference sets too: C/b7 holds B flat); a label we cannot read raises ChordError."""
    token = label.strip()
    if token == "X":
        return -np.ones(12)
    return np.asarray(chord_to_pitch_classes(token), dtype=np.float64)


def frame_count(duration: float) -> int:
    """Frames covering `duration` seconds (1500 for 30 s)."""
    return max(1, math.ceil(duration * FRAME_RATE - 1e-6))


def chord_frames(segments: Sequence[Segment], frames: int) -> np.ndarray:
    """(12, frames) float64: each segment's vector over [int(start * 50), int(end * 50))."""
    out = np.zeros((12, frames))
    for segment in segments:
        start, end = int(float(segment.start) * FRAME_RATE), int(float(segment.end) * FRAME_RATE)
        out[:, max(start, 0):max(end, 0)] = chord_vector(segment.label)[:, None]
    return out


def beat_frames(beats: Sequence[float], downbeats: Sequence[float], frames: int) -> np.ndarray:
    """(1, frames) float64: smoothed beat impulses plus unsmoothed downbeat impulses."""
    impulses, bars = np.zeros(frames), np.zeros(frames)
    impulses[_frames_of(beats, frames)] = 1
    bars[_frames_of(downbeats, frames)] = 1
    return (np.convolve(impulses, BEAT_KERNEL, "same") + bars)[None]


def _frames_of(times: Sequence[float], frames: int) -> list[int]:
    # int() truncates in float64 as the reference does: 17.9 s is frame 894 (17.9 * 50.0 = 894.999...).
    return [int(float(t) * FRAME_RATE) for t in times if 0 <= float(t) and int(float(t) * FRAME_RATE) < frames]


def song_frames(segments: Sequence[Segment], beats: Sequence[float], downbeats: Sequence[float],
                duration: float) -> SongFrames:
    """The whole song's chord and beat frames (times in seconds on the song's timeline)."""
    frames = frame_count(duration)
    return SongFrames(chord_frames(segments, frames), beat_frames(beats, downbeats, frames))


def window(song: SongFrames, start: float) -> WindowFrames:
    """The 1500 frames from `start` seconds. Frames past the song's end continue from its start (as the chord
    models' condition does), so that every window, the last and a song shorter than 30 s included, is a full
    window with its chord prefix: the reference gives a window of any other length a prefix of zeros (it then
    hears no chords before the text). Tokens are only generated up to the song's end."""
    first = int(round(start * FRAME_RATE))
    index = (first + np.arange(WINDOW_FRAMES)) % song.frames
    return WindowFrames(song.chord[:, index], song.beat[:, index])
