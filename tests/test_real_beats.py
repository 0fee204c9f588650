"""Every beat-dependent feature end to end on a real recording, with madmom's real downbeat networks and the
tiny random weights for every other model: beat-sync, MusiConGen on the song's beat frames, tempo and
transpose, user chords on the detected bars, beat fidelity and the takes ranked by it.

The songs are CC BY recordings (../shared/testdata/songs, SOURCES.md). The tiny MusicGen makes noise, so what
is asserted is the wiring and the song's side: what the song's real beats become at every stage."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from remixer import audio, generation, keytempo
from remixer.request import RemixRequest
from tests.conftest import SHARED

SONG = SHARED / "songs" / "lets_go_fishin_0-40s.ogg"
SECONDS = 16.0


def test_cli_remix_of_a_real_song_syncs_the_band_to_its_bars_and_ranks_takes_by_beat_fidelity(tiny_weights,
                                                                                             tmp_path):
    output = tmp_path / "fishin.wav"
    done = subprocess.run(
        [sys.executable, "-m", "remixer", str(SONG), "--prompt", "bossa nova", "--model-version", "chord",
         "--beat-tracker", "madmom", "--end-time", str(SECONDS), "--takes", "2", "--seed", "2",
         "--beat-sync-threshold", "1.5", "--return-analysis", "--return-midi", "--weights-dir", str(tiny_weights), "--offline",
         "--output", str(output)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "song: 176.0 bpm, 4/4, 12 bars (madmom); sections: not looked for (madmom finds none)" in done.stdout
    analysis = json.loads(output.with_name("fishin.analysis.json").read_text())
    assert analysis["beat_tracker"] == "madmom" and analysis["sections_found"] is False
    assert analysis["bpm"] == pytest.approx(176, abs=1.5) and analysis["meter"] == 4
    assert len(analysis["downbeats"]) >= 10 and set(analysis["downbeats"]) <= set(analysis["beats"])
    # Beat-sync matched bars of the new music to the song's and moved them, within the threshold asked for.
    moved = analysis["beat_sync"]
    assert moved["anchors"] >= 1 and 0 < moved["max_shift_s"] <= moved["threshold_s"] == 1.5
    # Beat fidelity is measured on every take, and the takes are ranked by the score it enters.
    takes = analysis["takes"]
    assert [t["rank"] for t in takes] == [1, 2] and all(isinstance(t["beat_f"], float) for t in takes)
    assert takes[0]["score"] >= takes[1]["score"] and takes[0]["chosen"]
    assert analysis["fidelity"]["beat_f"] == takes[0]["beat_f"]
    assert "takes (best first): take" in done.stdout
    remix, rate = sf.read(output)
    assert rate == 44100 and abs(len(remix) - SECONDS * rate) <= 1  # the song's own rate
    # The MIDI file, read by another reader than the one that wrote it: the song's detected beats within 1 ms
    # (after the lead-in beat at 0), its bars on the grid's bar lines, the chords as their labels' notes.
    import pretty_midi

    from remixer.chords import chord_to_pitch_classes

    song_midi = pretty_midi.PrettyMIDI(str(output.with_name("fishin.midi.mid")))
    grid = song_midi.get_beats()
    first = int(np.argmin(np.abs(grid - analysis["beats"][0])))
    np.testing.assert_allclose(grid[first:first + len(analysis["beats"])], analysis["beats"], atol=1e-3)
    bar_lines = song_midi.get_downbeats()
    assert all(np.min(np.abs(bar_lines - d)) < 1e-3 for d in analysis["downbeats"])
    for chord in analysis["chords"]:
        played = {n.pitch % 12 for n in song_midi.instruments[0].notes if abs(n.start - chord["start"]) < 2e-3}
        assert [int(pc in played) for pc in range(12)] == chord_to_pitch_classes(chord["label"]), chord
    assert "midi: " in done.stdout


@pytest.fixture(scope="module")
def song_rhythm(tiny_remixer):
    song = audio.decode(SONG)
    part = song.samples[:, :int(SECONDS * song.sample_rate)]
    return tiny_remixer.tracker.analyze_mix(part, song.sample_rate)


def test_musicongen_hears_the_songs_beats_on_its_bars_with_user_chords_transposed_and_retimed(
        tiny_remixer, song_rhythm, tmp_path, monkeypatch):
    """One in-process remix with every beat-dependent input at once: musicongen, user chords, transpose and
    tempo. Wiring: what reaches generation (spied on, not replaced) is the song's detected beats on the new
    tempo's timeline, the user's chords (transposed) laid on the detected bars."""
    seen = {}
    original = generation.generate_takes

    def spy(model, prompt, condition, duration, *args, **kwargs):
        seen["condition"], seen["duration"] = condition, duration
        return original(model, prompt, condition, duration, *args, **kwargs)

    monkeypatch.setattr(generation, "generate_takes", spy)
    tempo = round(song_rhythm.bpm * 0.9, 1)
    request = RemixRequest.from_inputs(prompt="jazz", music_input=str(SONG), model_version="musicongen",
                                       beat_tracker="madmom", end_time=SECONDS, chords="C G Am F", transpose=2,
                                       tempo=tempo, seed=3, return_analysis=True)
    result = tiny_remixer.remix(request, tmp_path)
    analysis = result.analysis
    factor = song_rhythm.bpm / tempo
    # tempo: the whole song scaled; the remix is as long as the retimed song.
    remix, rate = sf.read(result.remix)
    assert abs(len(remix) - round(SECONDS * factor * rate)) <= rate // 50
    assert analysis.key_tempo["time_factor"] == pytest.approx(factor)
    np.testing.assert_allclose(analysis.downbeats, np.array(song_rhythm.downbeats) * factor, atol=1e-6)
    # transpose and chords: the user's progression, up a tone, one chord per detected bar.
    labels = [c.label for c in analysis.chords]
    assert labels[:4] == ["D", "A", "Bm", "G"] and all(label in {"D", "A", "Bm", "G"} for label in labels)
    starts = [c.start for c in analysis.chords]
    np.testing.assert_allclose(starts[1:], analysis.downbeats[1:len(starts)], atol=1e-6)
    # MusiConGen's beat frames carry the song's detected beats (0.9) and bars (1.9) on the new timeline.
    frames = seen["condition"]
    assert seen["duration"] == pytest.approx(SECONDS * factor, abs=0.01)
    downbeats = set(analysis.downbeats)
    for beat in analysis.beats:
        frame = int(beat * 50.0)
        assert frames.beat[0, frame] == pytest.approx(1.9 if beat in downbeats else 0.9, abs=0.11), beat
    # Beat-sync for MusiConGen closes at most a quarter beat (its bars are on the song's already).
    assert analysis.beat_sync["threshold_s"] == pytest.approx(0.25 * 60 / tempo, abs=1e-4)
    assert analysis.beat_sync["max_shift_s"] <= analysis.beat_sync["threshold_s"]
    assert analysis.fidelity["beat_f"] is not None


def test_the_song_bpm_the_tempo_input_checks_is_the_trackers(tiny_remixer, song_rhythm, tmp_path):
    too_fast = round(song_rhythm.bpm * (keytempo.TEMPO_RANGE[1] + 0.1), 1)
    request = RemixRequest.from_inputs(prompt="jazz", music_input=str(SONG), model_version="chord",
                                       beat_tracker="madmom", end_time=SECONDS, tempo=too_fast)
    with pytest.raises(keytempo.KeyTempoError, match=f"song's tempo of {song_rhythm.bpm:.1f} bpm"):
        tiny_remixer.remix(request, tmp_path)
    assert not list(tmp_path.iterdir())
