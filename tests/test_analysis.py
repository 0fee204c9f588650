"""analysis.json's layout and analysis.png's labels (the picture itself is checked through the HTTP API)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from btc import ChordSegment
from remixer.analysis import LABEL_CHAR_PX, LABEL_PAD_PX, SongAnalysis, place_labels, render_png, write_json
from remixer.rhythm import Section


def _song(duration: float, offset: float = 0.0) -> SongAnalysis:
    downbeats = list(np.arange(offset + 0.5, offset + duration, 2.0))
    beats = sorted(d + k * 0.5 for d in downbeats for k in range(4))
    names = ["C", "G", "A:min", "F#:maj7", "B:hdim7"]
    chords = [ChordSegment(d, d + 2.0, names[i % 5]) for i, d in enumerate(downbeats)]
    half = offset + duration / 2
    sections = [Section(offset, half, "verse"), Section(half, offset + duration, "chorus")]
    return SongAnalysis(duration, offset, 120.0, beats, downbeats, sections, chords, prompt_sent="jazz, bpm : 120",
                        model_version="chord", seed=3, timings={"decode": 0.1})


def test_json_layout_is_versioned_and_on_the_songs_timeline(tmp_path):
    data = json.loads(write_json(_song(20.0, offset=30.0), tmp_path / "analysis.json").read_text())
    assert data["schema_version"] == 1 and data["section"] == {"start": 30.0, "end": 50.0}
    assert data["meter"] == 4 and data["bpm"] == 120.0 and data["downbeats"][0] == 30.5
    assert data["chords"][0] == {"start": 30.5, "end": 32.5, "label": "C"} and data["chords_source"] == "recognised"
    assert data["sections"][1] == {"label": "chorus", "start": 40.0, "end": 50.0}
    assert (data["prompt"], data["model_version"], data["seed"], data["timings"]) == (
        "jazz, bpm : 120", "chord", 3, {"decode": 0.1})


def test_labels_never_overlap_even_for_a_ten_minute_song(tmp_path):
    for duration in (20.0, 600.0):
        song = _song(duration)
        seconds_per_px = duration / 1600
        placed = place_labels(song.chords, seconds_per_px)
        for row in (0, 1):
            spans = [(t, t + (LABEL_CHAR_PX * len(label) + LABEL_PAD_PX) * seconds_per_px)
                     for t, label, r in placed if r == row]
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
        if duration == 20.0:
            assert len(placed) == len(song.chords)  # a short song names every chord
        else:
            assert len(placed) >= 60
        path = render_png(song, np.zeros((1, int(duration * 100)), np.float32), 100, tmp_path / f"{duration}.png")
        assert Image.open(path).size == (1600, 500)


def test_a_chord_near_the_right_edge_is_moved_inside_the_picture():
    duration, seconds_per_px = 20.0, 20.0 / 1600
    chords = [ChordSegment(0.0, 19.9, "C"), ChordSegment(19.9, 20.0, "F#:maj7")]
    placed = place_labels(chords, seconds_per_px, end=duration)
    (x, label, _), = [p for p in placed if p[1] == "F#:maj7"]
    width = (LABEL_CHAR_PX * len(label) + LABEL_PAD_PX) * seconds_per_px
    assert x + width <= duration + 1e-9 and x < 19.9
    assert place_labels(chords, seconds_per_px)[1][0] == 19.9  # without an edge nothing moves


def test_neighbouring_sections_with_the_same_label_show_their_boundary(tmp_path):
    def column_darkness(sections, t):
        song = SongAnalysis(10.0, 0.0, None, [], [], sections, [], prompt_sent="x", model_version="chord", seed=1)
        path = render_png(song, np.zeros((1, 1000), np.float32), 100, tmp_path / "a.png")
        pixels = np.asarray(Image.open(path).convert("L"), dtype=float) / 255
        x = int(round((0.01 + 0.985 * t / 10.0) * 1600))  # the axes span 1 % .. 99.5 % of the width
        bottom_panel = pixels[int(0.72 * 500):int(0.88 * 500)]
        return 1 - bottom_panel[:, x - 2:x + 3].min()

    two = [Section(0.0, 5.0, "verse"), Section(5.0, 10.0, "verse")]
    elsewhere = [Section(0.0, 3.0, "verse"), Section(3.0, 10.0, "verse")]  # its boundary and names away from 5 s
    assert column_darkness(two, 5.0) > 0.6 and column_darkness(elsewhere, 5.0) < 0.3
    assert column_darkness(elsewhere, 3.0) > 0.6
