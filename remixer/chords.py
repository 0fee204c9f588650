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
# A scale degree's semitones above the root (Harte 2010; the MusiConGen reference's `interval`: degrees 1-13).
DEGREE_SEMITONES = {1: 0, 2: 2, 3: 4, 4: 5, 5: 7, 6: 9, 7: 11, 8: 0, 9: 2, 10: 4, 11: 5, 12: 7, 13: 9}
# Semitones above the root, per quality: Harte's shorthands (BTC's 14 among them) and the qualities the MusiConGen
# reference's chord table adds (`audiocraft/data/btc_chords.py`, `_shorthands`: add9, 7sus2, 7sus4, 4, 11, min11,
# 13, maj13, min13). One place we part from it: there `6` is (1,6); here, as in common use, `6` is maj6.
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
    "add9": (0, 2, 4, 7),
    "7sus2": (0, 2, 7, 10),
    "7sus4": (0, 5, 7, 10),
    "11": (0, 2, 4, 5, 7, 10),
    "maj11": (0, 2, 4, 5, 7, 11),
    "min11": (0, 2, 3, 5, 7, 10),
    "13": (0, 4, 7, 9, 10),
    "maj13": (0, 4, 7, 9, 11),
    "min13": (0, 3, 7, 9, 10),
    "5": (0, 7),
    "4": (0, 5),
    "1": (0,),
}
_ALIASES = {"": "maj", "m": "min", "major": "maj", "minor": "min", "6": "maj6", "m7": "min7",
            "dom7": "7", "m6": "min6", "mmaj7": "minmaj7", "m9": "min9"}
# The colon is optional so that everyday shorthand reads too: Am, F#m7, Bbmaj7, G7, Csus4.
LABEL = re.compile(r"^(?P<root>[A-G])(?P<accidentals>[#b]*)(?P<colon>:?)(?P<quality>[^/():]*)"
                   r"(?:\((?P<extensions>[^)]*)\))?(?:/(?P<bass>[#b]*[1-9][0-9]?|[A-G][#b]*))?$")
_DEGREE = re.compile(r"^(?P<omit>\*?)(?P<accidentals>[#b]*)(?P<degree>[0-9]+)$")
SYNTAX = ("a root (C, F#, Bb), then optionally a quality (maj, min, 7, min7, maj7, dim, hdim7, sus4, add9, ...; "
          "with or without a colon: Am, A:min, G7, Bbmaj7), a degree list in Harte's syntax (C:(1,b3,5), "
          "C:min(*5) leaves out the fifth, C:maj(9) adds the ninth) and /bass (a degree, C/b7, or a note, "
          "C/E); or N for no chord")


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
    """12 ints (0/1), pitch class 0 = C: the chord's tones as Harte writes them (quality, then the degree list's
    added tones and *omissions, then the bass note). N (no chord) and X (unknown) are all zeros."""
    token = label.strip()
    if token in {"N", "X"}:
        return [0] * 12
    root, semitones, bass = _read(token, label)
    vector = [0] * 12
    for interval in semitones:
        vector[(root + interval) % 12] = 1
    if bass is not None:  # the bass sounds: C/b7 holds B flat (the reference sets it too)
        vector[bass] = 1
    return vector


def _read(token: str, label: str) -> tuple[int, set[int], int | None]:
    """(root pitch class, semitones above it, bass pitch class or None) of a label, or ChordError."""
    match = LABEL.match(token)
    if match is None:
        raise ChordError(f"cannot read chord {label!r}: write {SYNTAX}")
    quality = match["quality"]
    if quality == "" and match["colon"] and match["extensions"] is not None:
        semitones: set[int] = set()  # C:(1,b3,5): exactly the listed degrees
    else:
        quality = _ALIASES.get(quality, quality)
        if quality not in QUALITY_INTERVALS:
            raise ChordError(f"unknown chord quality {quality!r} in {label!r}; known: {', '.join(QUALITY_INTERVALS)} "
                             f"(or a degree list, C:(1,b3,5))")
        semitones = set(QUALITY_INTERVALS[quality])
    for item in (match["extensions"] or "").split(",") if match["extensions"] is not None else []:
        step = _degree(item.strip(), label)
        if item.strip().startswith("*"):
            semitones.discard(step)
        else:
            semitones.add(step)
    root = _pitch(match["root"], match["accidentals"])
    bass = match["bass"]
    if not bass:
        return root, semitones, None
    if bass[0] in NOTE_PITCH:
        return root, semitones, _pitch(bass[0], bass[1:])
    return root, semitones, (root + _degree(bass, label)) % 12


def root_pitch_class(label: str) -> int | None:
    """The root's pitch class (C = 0) of a chord label; None for N and X."""
    token = label.strip()
    if token in {"N", "X"}:
        return None
    return _read(token, label)[0]


def _pitch(note: str, accidentals: str) -> int:
    return (NOTE_PITCH[note] + accidentals.count("#") - accidentals.count("b")) % 12


def _degree(text: str, label: str) -> int:
    """A degree ('b3', '#5', '*5', '9') as semitones above the root, 0-11."""
    match = _DEGREE.match(text)
    if match is None or int(match["degree"]) not in DEGREE_SEMITONES:
        raise ChordError(f"cannot read the degree {text!r} in chord {label!r}: a degree is 1 to 13 with optional "
                         f"flats or sharps before it (b3, #5, 9) and * to leave it out (*5)")
    accidentals = match["accidentals"]
    return (DEGREE_SEMITONES[int(match["degree"])] + accidentals.count("#") - accidentals.count("b")) % 12


def _frame(seconds: float) -> int:
    # Round half up, so a boundary at exactly half a frame is deterministic.
    return int(math.floor(seconds / FRAME_SECONDS + 0.5))


# Harte's shorthands that mir_eval reads (mir_eval.chord.QUALITIES); others are written as degree lists.
_MIR_EVAL_QUALITIES = {"maj", "min", "dim", "aug", "min6", "maj6", "min7", "minmaj7", "maj7", "7", "dim7", "hdim7",
                       "sus2", "sus4", "9", "maj9", "min9", "11", "maj11", "min11", "13", "maj13", "min13", "5", "1"}
_SEMITONE_DEGREES = ("1", "b2", "2", "b3", "3", "4", "b5", "5", "b6", "6", "b7", "7")


def harte(label: str) -> str:
    """A chord label in Harte syntax as mir_eval reads it: 'Am' -> 'A:min', 'G7' -> 'G:7', BTC's 'C' ->
    'C:maj'; a quality mir_eval lacks, or a degree list, as the degree list of its tones ('C:add9' ->
    'C:(1,2,3,5)'); N and X stay. Inversions are dropped (they change neither majmin nor tetrads)."""
    token = label.strip()
    if token in {"N", "X"}:
        return token
    root, semitones, _ = _read(token, label)
    match = LABEL.match(token)
    name = f"{match['root']}{match['accidentals']}"
    quality = _ALIASES.get(match["quality"], match["quality"]) if not (match["colon"] and match["quality"] == ""
                                                                       and match["extensions"] is not None) else ""
    if quality in _MIR_EVAL_QUALITIES and set(QUALITY_INTERVALS[quality]) == semitones:
        return f"{name}:{quality}"
    return f"{name}:({','.join(_SEMITONE_DEGREES[s] for s in sorted(semitones))})"


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
    # Commas and bars separate chords, except a comma inside a degree list: C:(1,b3,5).
    labels = re.sub(r",(?![^()]*\))", " ", text).replace("|", " ").split()
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
