"""How faithfully a remix plays the song: its chords and its beats, measured as the field measures them.

MusiConGen (arXiv 2407.15060, Table 2) scores chord- and rhythm-conditioned
MusicGen by running BTC on the generated audio and comparing it with the
conditioning chords frame by frame (mir_eval's majmin and tetrads,
duration-weighted), and by beat tracking on the generated audio against the
reference beats (`mir_eval.beat.f_measure`, 70 ms window). We do the same on
the song's timeline: the generated music's chords and beats (from the BTC and
All-In-One passes over the stems beat-sync already separated) are mapped
through beat-sync's own time map, so the synced audio is never analysed again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from remixer.chords import Segment, harte

BEAT_WINDOW_S = 0.07
# The take score: chords as majmin count twice tetrads and beats, a documented choice: majmin is the
# coarse harmony every listener hears, tetrads the detail, beats the groove.
SCORE_WEIGHTS = {"chord_majmin": 0.5, "chord_tetrads": 0.25, "beat_f": 0.25}
NUMBERS = tuple(SCORE_WEIGHTS)

TimeMap = Callable[[np.ndarray], np.ndarray]


def identity(seconds: np.ndarray) -> np.ndarray:
    """The time map of music that was not moved: seconds to the same seconds."""
    return np.asarray(seconds, dtype=np.float64)


@dataclass(frozen=True)
class Fidelity:
    """The numbers (0..1, None where not measurable) and, for each None, why."""

    chord_majmin: float | None = None
    chord_tetrads: float | None = None
    beat_f: float | None = None
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """The weighted mean of the numbers measured (weights renormalised over them); 0 when none was."""
        measured = {name: getattr(self, name) for name in NUMBERS if getattr(self, name) is not None}
        if not measured:
            return 0.0
        total = sum(SCORE_WEIGHTS[name] for name in measured)
        return float(sum(SCORE_WEIGHTS[name] * value for name, value in measured.items()) / total)

    def as_dict(self) -> dict:
        """The numbers (rounded to 4 places, None when unmeasured), the score and why any is missing."""
        numbers = {name: None if getattr(self, name) is None else round(float(getattr(self, name)), 4)
                   for name in NUMBERS}
        return {**numbers, "score": round(self.score, 4), "unmeasured": dict(self.reasons)}

    @property
    def unmeasured(self) -> str:
        """Why the numbers shown as n/a are missing, each reason once ('' when all were measured)."""
        return "; ".join(sorted(set(self.reasons.values())))

    def summary(self) -> str:
        """One line: each number or n/a, then the score."""
        parts = [f"{name} {getattr(self, name):.2f}" if getattr(self, name) is not None else f"{name} n/a"
                 for name in NUMBERS]
        return ", ".join(parts) + f" (score {self.score:.2f})"


@dataclass(frozen=True)
class MappedSegment:
    start: float
    end: float
    label: str


def map_segments(segments: Sequence[Segment], time_map: TimeMap, duration: float) -> list[MappedSegment]:
    """Chord segments through a time map, clipped to [0, duration]; segments mapped to nothing are dropped."""
    if not segments:
        return []
    starts = time_map(np.array([s.start for s in segments]))
    ends = time_map(np.array([s.end for s in segments]))
    mapped = []
    for segment, start, end in zip(segments, starts, ends):
        start, end = float(np.clip(start, 0, duration)), float(np.clip(end, 0, duration))
        if end > start:
            mapped.append(MappedSegment(start, end, segment.label))
    return mapped


def chord_scores(reference: Sequence[Segment], estimated: Sequence[Segment], duration: float
                 ) -> tuple[float | None, float | None]:
    """(majmin, tetrads): duration-weighted agreement of `estimated` with `reference` over [0, duration]."""
    import mir_eval

    if not reference or not estimated or duration <= 0:
        return None, None
    ref_intervals, ref_labels = _intervals(reference)
    est_intervals, est_labels = _intervals(estimated)
    # Both cover exactly the song: N (no chord) where a list has nothing.
    ref_intervals, ref_labels = mir_eval.util.adjust_intervals(ref_intervals, ref_labels, 0.0, duration, "N", "N")
    est_intervals, est_labels = mir_eval.util.adjust_intervals(est_intervals, est_labels, 0.0, duration, "N", "N")
    intervals, ref_labels, est_labels = mir_eval.util.merge_labeled_intervals(
        ref_intervals, ref_labels, est_intervals, est_labels)
    weights = mir_eval.util.intervals_to_durations(intervals)
    scores = []
    for compare in (mir_eval.chord.majmin, mir_eval.chord.tetrads):
        comparison = compare(ref_labels, est_labels)
        # -1 marks frames the comparison ignores (X, or chords outside its vocabulary).
        if (weights[comparison >= 0]).sum() <= 0:
            scores.append(None)
        else:
            scores.append(float(mir_eval.chord.weighted_accuracy(comparison, weights)))
    return scores[0], scores[1]


def _intervals(segments: Sequence[Segment]) -> tuple[np.ndarray, list[str]]:
    ordered = sorted((s for s in segments if s.end > s.start), key=lambda s: s.start)
    return (np.array([[s.start, s.end] for s in ordered], dtype=np.float64).reshape(-1, 2),
            [harte(s.label) for s in ordered])


def beat_f(reference: Sequence[float], estimated: Sequence[float]) -> float | None:
    """F-measure of `estimated` beats against `reference` (70 ms window); None when either is empty."""
    import mir_eval

    reference, estimated = np.sort(np.asarray(reference, float)), np.sort(np.asarray(estimated, float))
    if reference.size == 0 or estimated.size == 0:
        return None
    return float(mir_eval.beat.f_measure(reference, estimated, f_measure_threshold=BEAT_WINDOW_S))


def measure(song_chords: Sequence[Segment], song_beats: Sequence[float],
            generated_chords: Sequence[Segment] | None, generated_beats: Sequence[float] | None,
            time_map: TimeMap, duration: float, why_not: str = "") -> Fidelity:
    """The remix's numbers on the song's timeline. `generated_chords`/`generated_beats` are on the generated
    music's own timeline (None: not analysed, `why_not` says why); `time_map` takes them to the song's."""
    reasons: dict[str, str] = {}
    majmin = tetrads = beats = None
    if generated_chords is None:
        reasons["chord_majmin"] = reasons["chord_tetrads"] = why_not or "the generated music was not analysed"
    elif not any(s.label not in {"N", "X"} for s in song_chords):
        reasons["chord_majmin"] = reasons["chord_tetrads"] = "no chords were found in the song"
    else:
        majmin, tetrads = chord_scores(song_chords, map_segments(generated_chords, time_map, duration), duration)
        for name, value in (("chord_majmin", majmin), ("chord_tetrads", tetrads)):
            if value is None:
                reasons[name] = "no chord of that vocabulary to compare"
    if generated_beats is None:
        reasons["beat_f"] = why_not or "the generated music was not analysed"
    elif len(song_beats) == 0:
        reasons["beat_f"] = "no beats were found in the song"
    elif len(generated_beats) == 0:
        reasons["beat_f"] = "no beats were found in the generated music"
    else:
        mapped = time_map(np.asarray(generated_beats, dtype=np.float64))
        beats = beat_f(song_beats, mapped[(mapped >= 0) & (mapped <= duration)])
        if beats is None:
            reasons["beat_f"] = "no generated beat lands inside the song"
    return Fidelity(majmin, tetrads, beats, reasons)
