"""Chord labels -> multi-hot chord chroma, the condition MusicGen-Chord takes.

The song's chords are recognised once; `segments_to_chroma` turns the whole
timeline into chroma and `window_chroma` cuts it for each generation window.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import numpy as np

from remixer.errors import RemixerError

WINDOW_SECONDS = 30.0
FRAMES_PER_WINDOW = 235  # transformers' chroma_length for a 30 s window
FRAME_SECONDS = WINDOW_SECONDS / FRAMES_PER_WINDOW
SMOOTHING_FRAMES = 7
COEFFICIENT_RANGE = (0.5, 2.0)  # chroma_coefficient's range, checked by the request

NOTE_PITCH = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
# Semitones above the root, per quality (Harte syntax, as BTC's vocabularies use).
QUALITY_INTERVALS: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "min6": (0, 3, 7, 9),
    "maj6": (0, 4, 7, 9),
    "min7": (0, 3, 7, 10),
    "minmaj7": (0, 3, 7, 11),
    "maj7": (0, 4, 7, 11),
    "7": (0, 4, 7, 10),
    "dim7": (0, 3, 6, 9),
    "hdim7": (0, 3, 6, 10),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
    "9": (0, 2, 4, 7, 10),
    "maj9": (0, 2, 4, 7, 11),
    "min9": (0, 2, 3, 7, 10),
    "5": (0, 7),
    "1": (0,),
}
_ALIASES = {"": "maj", "m": "min", "major": "maj", "minor": "min", "6": "maj6", "m7": "min7",
            "dom7": "7", "m6": "min6", "mmaj7": "minmaj7", "m9": "min9"}
# The colon is optional so that everyday shorthand reads too: Am, F#m7, Bbmaj7, G7, Csus4.
LABEL = re.compile(r"^(?P<root>[A-G])(?P<accidentals>[#b]*):?(?P<quality>[^/():]*)"
                    r"(?:\((?P<extensions>[^)]*)\))?(?:/(?P<bass>[#b]*[1-9][0-9]?|[A-G][#b]*))?$")


def recognizer_component(large_vocabulary: bool) -> str:
    """The weights component of BTC's large (170 classes) or major/minor (25) vocabulary."""
    return "btc-large-voca" if large_vocabulary else "btc-majmin"


def read_recognizer(path: Path, device: str = "cpu"):
    """A BTC checkpoint file -> recognizer, read the product's one safe way (remixer.checkpoints)."""
    import btc
    from remixer import checkpoints

    try:
        return btc.recognizer_from_package(checkpoints.read(path, "BTC checkpoint", checkpoints.NUMPY), path, device)
    except btc.BTCFormatError as error:  # btc stays standalone: its errors join our family here
        raise checkpoints.CheckpointError(str(error)) from None


class ChordError(RemixerError):
    """A chord label we cannot read; the message names it."""


class Segment(Protocol):
    """A labelled span on a timeline, seconds: a chord (btc.ChordSegment) or a section (rhythm.Section)."""

    start: float
    end: float
    label: str


def chord_to_pitch_classes(label: str) -> list[int]:
    """12 ints (0/1), pitch class 0 = C. N (no chord) and X (unknown) are all zeros."""
    token = label.strip()
    if token in {"N", "X"}:
        return [0] * 12
    match = LABEL.match(token)
    if match is None:
        raise ChordError(
            f"cannot read chord {label!r}: write a root (C, F#, Bb) optionally followed by a quality "
            f"({', '.join(QUALITY_INTERVALS)}, or m, m7, 6; with or without a colon: Am, A:min, G7, Bbmaj7) "
            f"and /bass, or N for no chord"
        )
    quality = match["quality"] if match["quality"] is not None else ""
    quality = _ALIASES.get(quality, quality)
    if quality == "" and match["extensions"] is not None:
        quality = "maj"
    if quality not in QUALITY_INTERVALS:
        raise ChordError(f"unknown chord quality {quality!r} in {label!r}; known: {', '.join(QUALITY_INTERVALS)}")
    root = (NOTE_PITCH[match["root"]] + match["accidentals"].count("#") - match["accidentals"].count("b")) % 12
    vector = [0] * 12
    for interval in QUALITY_INTERVALS[quality]:
        vector[(root + interval) % 12] = 1
    # An inversion (C/E, C/3) names the bass note; it is already a chord tone
    # and the chroma holds the chord's pitch classes, so it adds nothing.
    return vector


def _frame(seconds: float) -> int:
    # Round half up, so a boundary at exactly half a frame is deterministic.
    return int(math.floor(seconds / FRAME_SECONDS + 0.5))


def harte(label: str) -> str:
    """A chord label in Harte syntax (what mir_eval reads): 'Am' -> 'A:min', 'G7' -> 'G:7', BTC's 'C' ->
    'C:maj'; N and X stay. Inversions and added tones are dropped (they do not change majmin or tetrads)."""
    token = label.strip()
    if token in {"N", "X"}:
        return token
    chord_to_pitch_classes(token)  # raises ChordError for a label we cannot read
    match = LABEL.match(token)
    quality = _ALIASES.get(match["quality"], match["quality"])
    if quality == "" and match["extensions"] is not None:
        quality = "maj"
    return f"{match['root']}{match['accidentals']}:{quality}"


def frame_count(duration: float) -> int:
    """Chroma frames covering `duration` seconds (235 for 30 s)."""
    return max(1, math.ceil(duration / FRAME_SECONDS - 1e-6))


def segments_to_chroma(segments: Iterable[Segment], duration: float, coefficient: float = 1.0) -> np.ndarray:
    """Multi-hot chroma (frames, 12) on the model's 30/235 s grid (7.83 frames per second), smoothed,
    times `coefficient` (0.5..2.0: the request checked it)."""
    coefficient = float(coefficient)
    frames = frame_count(duration)
    raw = np.zeros((frames, 12), np.float32)
    for segment in segments:
        first, last = max(_frame(segment.start), 0), min(_frame(segment.end), frames)
        if last > first:
            raw[first:last] = chord_to_pitch_classes(segment.label)
    return (smooth(raw) * coefficient).astype(np.float32)


def smooth(raw: np.ndarray, width: int = SMOOTHING_FRAMES) -> np.ndarray:
    """Centred moving average (zero padded) per pitch class, then > 0.5."""
    kernel = np.ones(width) / width
    averaged = np.stack([np.convolve(raw[:, pc], kernel, mode="same") for pc in range(raw.shape[1])], axis=1)
    return (averaged > 0.5).astype(np.float32)


def window_chroma(chroma: np.ndarray, starts: Sequence[float],
                  window_seconds: float = WINDOW_SECONDS) -> list[np.ndarray]:
    """Cut the whole-song chroma into generation windows starting at `starts` (seconds).

    Each window has exactly the frames of `window_seconds`. Past the song's end
    the chords start again from the song's start, as the chord models are
    conditioned in the original (its windows read the song at positions modulo
    its length, and a song shorter than a window is tiled); zeros would tell
    the model "no chord" there.
    """
    size = frame_count(window_seconds)
    if len(chroma) == 0:
        return [np.zeros((size, 12), np.float32) for _ in starts]
    return [chroma[(_frame(start) + np.arange(size)) % len(chroma)] for start in starts]


# --- chords given by the user -----------------------------------------------------------------------

BEATS_PER_BAR_WITHOUT_DOWNBEATS = 4  # 4/4 when only a tempo is known


def parse_progression(text: str) -> list[str]:
    """'C G Am F' (one chord per bar) -> labels, each checked; an unknown one names the accepted forms."""
    labels = text.replace(",", " ").replace("|", " ").split()
    if not labels:
        raise ChordError("no chords given: write one chord per bar, e.g. 'C G Am F'")
    for label in labels:
        chord_to_pitch_classes(label)  # raises ChordError naming the label and the accepted forms
    return labels


def bar_starts(downbeats: Sequence[float], beats: Sequence[float], bpm: float | None, duration: float) -> list[float]:
    """Where the song's bars start: its downbeats, or (none found) every 4 beats of its tempo from its
    first beat; a clear error when neither is known."""
    starts = [t for t in downbeats if 0 <= t < duration]
    if len(starts) >= 2:
        return starts
    if bpm:
        first = beats[0] if beats else 0.0
        bar = BEATS_PER_BAR_WITHOUT_DOWNBEATS * 60.0 / bpm
        return list(np.arange(first, duration, bar))
    raise ChordError("chords need the song's bars, but no beat was found in it: use a song with a steady "
                     "beat, or leave chords empty to recognise them")


def lay_on_bars(labels: Sequence[str], starts: Sequence[float], duration: float):
    """One label per bar in order, repeated to the song's end; the first bar also covers any pickup.
    The same segments the recognizer gives (btc.ChordSegment)."""
    from btc import ChordSegment

    bounds = [0.0, *starts[1:], duration]
    return [ChordSegment(bounds[i], bounds[i + 1], labels[i % len(labels)]) for i in range(len(bounds) - 1)
            if bounds[i + 1] > bounds[i]]
