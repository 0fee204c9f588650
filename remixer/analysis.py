"""What the remix learnt about the song, as data (analysis.json) and as a picture (analysis.png).

The JSON layout is versioned (`schema_version`); every time is in seconds on
the input song's timeline (a remixed part starts at `section.start`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from remixer.chords import Segment  # a labelled span: a chord or a section

SCHEMA_VERSION = 1
PNG_SIZE = (1600, 500)  # pixels
LABEL_CHAR_PX, LABEL_PAD_PX = 6, 8  # a chord name's width at 8 pt, 100 dpi
MAX_BAR_NUMBERS = 40


@dataclass
class SongAnalysis:
    """Everything the stages found, on the song's timeline (scaled by key_tempo's time_factor when the
    tempo was changed: the output's timeline, offset included)."""

    duration: float  # of the remixed part
    offset: float  # where the remixed part starts in the song
    bpm: float | None
    beats: list[float]
    downbeats: list[float]
    sections: Sequence[Segment]
    chords: Sequence[Segment]
    chords_given: bool = False
    prompt_sent: str = ""
    model_version: str = ""
    seed: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    fidelity: dict | None = None  # the returned remix's numbers (remixer.fidelity.Fidelity.as_dict)
    takes: list[dict] = field(default_factory=list)  # every take, best first
    key_tempo: dict | None = None  # transpose, original and new bpm, time factor (remixer.keytempo)
    beat_sync: dict | None = None  # how far beat-sync moved the returned take's downbeats
    beat_tracker: str = "all-in-one"  # which tracker found beats, bars and sections (madmom finds no sections)
    kept: list[str] = field(default_factory=list)  # the song's own parts kept under the new band (keep)
    mix: dict | None = None  # the balance applied: the song's and the remix's, the gains (remixer.mix)
    decoder: dict | None = None  # the decoder's weights' precision, bits and device

    @property
    def finds_sections(self) -> bool:
        return self.beat_tracker != "madmom"

    @property
    def meter(self) -> int | None:
        """Beats per bar: the most common count of beats between consecutive downbeats."""
        if len(self.downbeats) < 2 or not self.beats:
            return None
        beats = np.asarray(self.beats)
        counts = [int(np.sum((beats >= a - 1e-3) & (beats < b - 1e-3)))
                  for a, b in zip(self.downbeats[:-1], self.downbeats[1:])]
        counts = [c for c in counts if c > 0]
        return int(np.bincount(counts).argmax()) if counts else None

    def to_json(self) -> dict:
        """The analysis as analysis.json's dict (schema_version first; times in seconds)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "duration": round(self.duration, 4),
            "section": {"start": round(self.offset, 4), "end": round(self.offset + self.duration, 4)},
            "bpm": self.bpm,
            "meter": self.meter,
            "beats": [round(t, 4) for t in self.beats],
            "downbeats": [round(t, 4) for t in self.downbeats],
            "beat_tracker": self.beat_tracker,
            "sections": [{"label": s.label, "start": round(s.start, 4), "end": round(s.end, 4)}
                         for s in self.sections],
            "sections_found": self.finds_sections,  # false: the tracker finds none (madmom), not "no sections"
            "chords": [{"start": round(c.start, 4), "end": round(c.end, 4), "label": c.label} for c in self.chords],
            "chords_source": "given" if self.chords_given else "recognised",
            "prompt": self.prompt_sent,
            "model_version": self.model_version,
            "seed": self.seed,
            "timings": {name: round(seconds, 3) for name, seconds in self.timings.items()},
            "kept": self.kept,
            # Fidelity and the takes' ranking judge the new band alone: kept parts are the song's own.
            "fidelity_of": "the new band alone" + (f" (the song's own {', '.join(self.kept)} kept)"
                                                   if self.kept else ""),
            "fidelity": self.fidelity,
            "takes": self.takes,
            "key_tempo": self.key_tempo,
            "beat_sync": self.beat_sync,
            "mix": self.mix,
            "decoder": self.decoder,
        }


def write_json(analysis: SongAnalysis, path: Path) -> Path:
    """Write analysis.json into `path` (UTF-8, indented) and return the path."""
    path.write_text(json.dumps(analysis.to_json(), indent=1))
    return path


def render_png(analysis: SongAnalysis, samples: np.ndarray, sample_rate: int, path: Path) -> Path:
    """The song's waveform, sections as coloured bands, bars with numbers, chord names; readable at
    1600 px for a 10-minute song (labels thinned so they never pile up)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    width, height = PNG_SIZE
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(width / 100, height / 100), dpi=100,
                                         gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    start, end = analysis.offset, analysis.offset + analysis.duration
    envelope_t, low, high = _envelope(samples, sample_rate, start, width * 2)
    top.fill_between(envelope_t, low, high, color="#333333", linewidth=0)
    colours = plt.get_cmap("tab10")
    names = sorted({s.label for s in analysis.sections})
    for section in analysis.sections:
        colour = colours(names.index(section.label) % 10)
        top.axvspan(section.start, section.end, color=colour, alpha=0.18, linewidth=0)
        bottom.axvspan(section.start, section.end, color=colour, alpha=0.35, linewidth=0)
        bottom.text((section.start + section.end) / 2, 0.8, section.label, ha="center", va="center", fontsize=9,
                    clip_on=True)
        if section.start > start:  # a boundary line, so that neighbours with the same label stay two sections
            for axis in (top, bottom):
                axis.axvline(section.start, color="black", linewidth=1.2, alpha=0.8)
    seconds_per_px = max(end - start, 1e-6) / width
    every = max(1, int(np.ceil(len(analysis.downbeats) / MAX_BAR_NUMBERS)))
    for number, t in enumerate(analysis.downbeats, start=1):
        top.axvline(t, color="#1f4e79", linewidth=0.6, alpha=0.5)
        if (number - 1) % every == 0:
            bottom.text(t, 0.45, str(number), ha="left", va="center", fontsize=7, color="#1f4e79")
    shown = place_labels(analysis.chords, seconds_per_px, end=end)
    for t, label, row in shown:
        top.text(t, 0.97 - 0.08 * row, label, transform=top.get_xaxis_transform(), ha="left", va="top",
                 fontsize=8, clip_on=True, bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 1})
    changes = len(chord_changes(analysis.chords))
    top.set_xlim(start, end)
    top.set_yticks([])
    bottom.set_yticks([])
    bottom.set_ylim(0, 1)
    bottom.set_xlabel("seconds")
    tempo = f"{analysis.bpm:.0f} bpm" if analysis.bpm else "no beat found"
    meter = f", {analysis.meter}/4" if analysis.meter else ""
    thinned = f" ({len(shown)} of {changes} chord changes named, to fit; all in analysis.json)" \
        if len(shown) < changes else ""
    sections = f"{len(analysis.sections)} sections" if analysis.finds_sections else "no sections (madmom finds none)"
    top.set_title(f"{tempo}{meter}, {len(analysis.downbeats)} bars ({analysis.beat_tracker}), {sections}, "
                  f"chords {'given' if analysis.chords_given else 'recognised'}{thinned}", fontsize=10, loc="left")
    figure.subplots_adjust(left=0.01, right=0.995, top=0.92, bottom=0.1, hspace=0.05)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def chord_changes(chords: Sequence[Segment]) -> list[tuple[float, str]]:
    """(time, name) where the chord changes; no-chord and unknown stretches are not named."""
    changes, previous = [], None
    for chord in chords:
        if chord.label != previous and chord.label not in {"N", "X"}:
            changes.append((chord.start, chord.label))
        previous = chord.label
    return changes


def place_labels(chords: Sequence[Segment], seconds_per_px: float, rows: int = 2,
                 end: float = np.inf) -> list[tuple[float, str, int]]:
    """Chord names on `rows` rows, each placed where its row is free (its text's width measured in
    pixels), dropped where neither row is: labels never overlap, at any song length. A name that would
    run past `end` (the picture's right edge) is moved left to end there, when its row has the room."""
    row_free = [-np.inf] * rows
    placed = []
    for t, label in chord_changes(chords):
        width_s = (LABEL_CHAR_PX * len(label) + LABEL_PAD_PX) * seconds_per_px
        x = min(t, end - width_s)
        for row in range(rows):
            if x >= row_free[row]:
                placed.append((x, label, row))
                row_free[row] = x + width_s
                break
    return placed


def _envelope(samples: np.ndarray, sample_rate: int, offset: float, points: int):
    mono = np.atleast_2d(samples).mean(axis=0)
    points = max(1, min(points, mono.size))
    edges = np.linspace(0, mono.size, points + 1).astype(int)
    low = np.array([mono[a:b].min(initial=0.0) for a, b in zip(edges[:-1], edges[1:])])
    high = np.array([mono[a:b].max(initial=0.0) for a, b in zip(edges[:-1], edges[1:])])
    return offset + edges[:-1] / sample_rate, low, high
