"""Key and tempo: the song in another key (`transpose`) or at another tempo (`tempo`).

The song's findings (chords, beats, bars, sections) are moved to the new key and
timeline; the generator plays to them; only the vocals are audio to change:
pitch-shifted with their formants kept, time-stretched with their pitch kept.

The shifter/stretcher is Signalsmith Stretch (MIT, `python-stretch`), chosen by
measurement against Rubber Band (GPL), pedalboard (GPL), librosa's phase vocoder
and our WSOLA (docs/key-and-tempo.md). It moves formants with the pitch, so a
shift is followed by our spectral-envelope correction: each frame's cepstrally
smoothed envelope is put back to the original's (`keep_envelope`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from remixer.chords import NOTE_PITCH
from remixer.errors import RemixerError
from remixer.request import TEMPO_RANGE
from remixer.rhythm import Rhythm

_NOTES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_NOTE = re.compile(r"^([A-G])([#b]*)")
# Envelope correction: a 2048-point STFT at 44.1 kHz (46 ms, resolves harmonics down to ~60 Hz) and a
# cepstral lifter of 1.5 ms, shorter than the period of any sung pitch (< 660 Hz), so the envelope follows
# the formants and not the harmonics.
ENVELOPE_FFT = 2048
ENVELOPE_HOP = 512
LIFTER_SECONDS = 0.0015
MAX_CORRECTION_DB = 24.0  # an envelope ratio beyond this is noise in a near-silent bin, not a formant
FLOOR_DB = 80.0  # under each frame's peak: silent bins do not pull the envelope down
PEAK_BINS = 17  # 365 Hz at 44.1 kHz: wider than the harmonics' spacing of most voices (f0 up to ~350 Hz)
# The correction moves at most as fast as 5 frames (58 ms): faster changes would modulate steady notes
# (measured: sidebands at -20 dB on a sung vowel without it, -50 dB with it).
SMOOTHING_FRAMES = 5


class KeyTempoError(RemixerError):
    """A transpose or tempo the song cannot take; the message says what it can."""


@dataclass(frozen=True)
class KeyTempo:
    """What a request changes: `transpose` semitones; `factor` output seconds per song second
    (song bpm / new tempo; 1.0: unchanged)."""

    transpose: int = 0
    factor: float = 1.0
    song_bpm: float | None = None
    tempo: float | None = None  # the new tempo; None when not asked

    @property
    def changes_key(self) -> bool:
        """Whether the chords and vocals move by semitones."""
        return self.transpose != 0

    @property
    def changes_tempo(self) -> bool:
        """Whether the timeline is scaled."""
        return self.factor != 1.0

    def as_dict(self) -> dict:
        """analysis.json's key_tempo: transpose, original_bpm, bpm, time_factor."""
        return {"transpose": self.transpose, "original_bpm": self.song_bpm,
                "bpm": self.tempo if self.tempo is not None else self.song_bpm, "time_factor": self.factor}


def plan(transpose: int, tempo: float | None, song_bpm: float | None) -> KeyTempo:
    """The change a request asks for, checked against the song's detected tempo (the request has already
    checked what does not depend on the song: transpose's range, a positive tempo)."""
    if tempo is None:
        return KeyTempo(transpose, 1.0, song_bpm, None)
    if not song_bpm:
        raise KeyTempoError(f"tempo={tempo:g} needs the song's tempo, but no beat was found in it: leave tempo "
                            "unset for this song")
    low, high = (song_bpm * r for r in TEMPO_RANGE)
    if not low - 1e-9 <= tempo <= high + 1e-9:
        raise KeyTempoError(f"tempo must be {TEMPO_RANGE[0]:g}x to {TEMPO_RANGE[1]:g}x the song's tempo of "
                            f"{song_bpm:.1f} bpm, i.e. {low:.1f} to {high:.1f} bpm; got {tempo:g}")
    return KeyTempo(transpose, float(song_bpm / tempo), song_bpm, float(tempo))


def transpose_label(label: str, semitones: int) -> str:
    """'A:min7' up 2 -> 'B:min7'; a note-name bass moves too ('C/E' -> 'D/F#'), a degree bass ('/3') and
    N / X stay. Spelled with sharps, as BTC's vocabularies are."""
    token = label.strip()
    if token in {"N", "X"} or semitones % 12 == 0:
        return token
    root, rest = _move_note(token, semitones)
    if "/" in rest:
        quality, bass = rest.split("/", 1)
        if _NOTE.match(bass):
            bass, tail = _move_note(bass, semitones)
            bass += tail
        rest = f"{quality}/{bass}"
    return root + rest


def _move_note(text: str, semitones: int) -> tuple[str, str]:
    match = _NOTE.match(text)
    if match is None:
        raise KeyTempoError(f"cannot transpose chord {text!r}: it has no root note")
    pitch = NOTE_PITCH[match[1]] + match[2].count("#") - match[2].count("b")
    return _NOTES[(pitch + semitones) % 12], text[match.end():]


def transpose_segments(segments: Sequence, semitones: int) -> list:
    """Chord segments with their roots (and note-name basses) moved by `semitones`; N and X kept."""
    return [replace(s, label=transpose_label(s.label, semitones)) for s in segments]


def scale_segments(segments: Sequence, factor: float) -> list:
    """Segments (chords or sections) with their times multiplied by `factor`."""
    return [replace(s, start=s.start * factor, end=s.end * factor) for s in segments]


def scale_rhythm(found: Rhythm, factor: float) -> Rhythm:
    """The song's rhythm on the scaled timeline: every time times `factor`, the tempo divided by it."""
    if factor == 1.0:
        return found
    return replace(found, bpm=None if found.bpm is None else found.bpm / factor,
                   beats=[t * factor for t in found.beats], downbeats=[t * factor for t in found.downbeats],
                   sections=scale_segments(found.sections, factor))


def apply(change: KeyTempo, found: Rhythm, segments: Sequence, duration: float) -> tuple[Rhythm, list, float]:
    """The song's rhythm, chords and length in the new key and on the new timeline."""
    segments = transpose_segments(segments, change.transpose)
    return scale_rhythm(found, change.factor), scale_segments(segments, change.factor), duration * change.factor


def retune(samples: np.ndarray, sample_rate: int, change: KeyTempo) -> np.ndarray:
    """(C, n) audio (the vocals) in the new key, formants kept, and stretched to the new timeline, pitch
    kept; unchanged (the same array) when nothing changes."""
    out = samples
    if change.changes_key:
        out = shift_pitch(out, sample_rate, change.transpose)
    if change.changes_tempo:
        out = stretch_time(out, sample_rate, change.factor)
    return out


def shift_pitch(samples: np.ndarray, sample_rate: int, semitones: float, keep_formants: bool = True) -> np.ndarray:
    """(C, n) -> (C, n): the pitch moved by `semitones`, the timing kept; formants kept unless asked not to."""
    shifted = _signalsmith(samples, sample_rate, semitones=semitones, speed=1.0)
    if not keep_formants:
        return shifted
    return keep_envelope(samples, shifted, sample_rate)


def stretch_time(samples: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """(C, n) -> (C, round(n * factor)): slower (factor > 1) or faster, pitch and formants kept."""
    stretched = _signalsmith(samples, sample_rate, semitones=0.0, speed=1.0 / factor)
    return _fit(stretched, int(round(samples.shape[1] * factor)))


def _signalsmith(samples: np.ndarray, sample_rate: int, semitones: float, speed: float) -> np.ndarray:
    import python_stretch

    stretcher = python_stretch.Signalsmith.Stretch()
    stretcher.preset(samples.shape[0], float(sample_rate))
    stretcher.setTransposeSemitones(float(semitones))
    stretcher.setTimeFactor(float(speed))  # its time factor is a speed: 2.0 plays twice as fast
    # It compensates its own latency: the output starts with the input.
    return stretcher.process(np.ascontiguousarray(samples, dtype=np.float32))


def _fit(samples: np.ndarray, length: int) -> np.ndarray:
    if samples.shape[1] >= length:
        return samples[:, :length]
    return np.pad(samples, ((0, 0), (0, length - samples.shape[1])))


def keep_envelope(original: np.ndarray, shifted: np.ndarray, sample_rate: int) -> np.ndarray:
    """`shifted` (same timing as `original`) with each frame's spectral envelope put back to the original's:
    the formants stay where the voice had them."""
    import librosa

    length = original.shape[1]
    window = dict(n_fft=ENVELOPE_FFT, hop_length=ENVELOPE_HOP)
    before = librosa.stft(original.astype(np.float32), **window)
    after = librosa.stft(_fit(shifted, length).astype(np.float32), **window)
    lifter = max(1, int(LIFTER_SECONDS * sample_rate))
    gain_db = np.clip(_envelope_db(before, lifter) - _envelope_db(after, lifter),
                      -MAX_CORRECTION_DB, MAX_CORRECTION_DB)
    gain_db = _smooth_frames(gain_db, SMOOTHING_FRAMES)
    corrected = librosa.istft(after * (10.0 ** (gain_db / 20.0)), length=length, **window)
    return corrected.astype(np.float32)


def _smooth_frames(values: np.ndarray, width: int) -> np.ndarray:
    """A moving average over the last axis (frames), the edges averaging what they have."""
    if width <= 1:
        return values
    kernel = np.ones(width)
    total = np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="same"), -1, values)
    count = np.convolve(np.ones(values.shape[-1]), kernel, mode="same")
    return total / count


def _envelope_db(spectrum: np.ndarray, lifter: int) -> np.ndarray:
    """Cepstrally smoothed log-magnitude (dB) of (..., bins, frames) spectra."""
    from scipy.ndimage import maximum_filter1d

    # The valleys between harmonics would weigh as much as the harmonics in a plain log average, and move
    # from frame to frame; the envelope is drawn over the harmonic peaks instead (a running maximum wider
    # than the harmonics' spacing), with a floor FLOOR_DB under each frame's peak for silent bins.
    magnitude = maximum_filter1d(np.abs(spectrum), size=PEAK_BINS, axis=-2)
    floor = magnitude.max(axis=-2, keepdims=True) * 10.0 ** (-FLOOR_DB / 20.0)
    log_magnitude = np.log(np.maximum(magnitude, floor) + 1e-9)
    cepstrum = np.fft.irfft(log_magnitude, axis=-2)
    cepstrum[..., lifter:-lifter + 1 if lifter > 1 else None, :] = 0.0
    smooth = np.fft.rfft(cepstrum, axis=-2).real[..., :spectrum.shape[-2], :]
    return smooth * (20.0 / np.log(10.0))
