"""Every beat-dependent feature end to end on a real recording, with madmom's real downbeat networks and the
tiny random weights for every other model: beat-sync, MusiConGen on the song's beat frames, tempo and
transpose, user chords on the detected bars, beat fidelity and the takes ranked by it.

The songs are CC BY recordings (../shared/testdata/songs, SOURCES.md). The tiny MusicGen makes noise, so what
is asserted is the wiring and the song's side: what the song's real beats become at every stage. Where the
band's beats matter (beat-sync, beat fidelity), the song itself read at a drifting pace stands in for it."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from remixer import audio, cli, fidelity, generation, keytempo, musicgen
from remixer.request import RemixRequest
from remixer.testing import beats
from tests.conftest import SHARED

SONG = SHARED / "songs" / "lets_go_fishin_0-40s.ogg"
SECONDS = 16.0


# The stand-ins for the generated band: the song's own recording read at two drifting paces (tape-like), so
# that where its beats are heard is known exactly, whatever the tiny MusicGen would have made of its noise.
DRIFTS = {1: dict(lag=0.15, slope=0.02, swing=0.08, period=8.0), 2: dict(lag=0.3, slope=0.03, swing=0.05, period=6.0)}


@pytest.fixture(scope="module")
def drifting_readings():
    """take -> (the song read at that take's drifting pace at 32 kHz, its tau): the generated band's stand-ins."""
    import soxr

    song = audio.decode(SONG)
    source = soxr.resample(song.samples.T, song.sample_rate, musicgen.SAMPLE_RATE).T
    return {take: beats.read_at_drifting_pace(source, musicgen.SAMPLE_RATE, SECONDS, **drift)
            for take, drift in DRIFTS.items()}


def stand_in_generation(readings):
    """generation.generate_takes with its result fixed: take k is reading k, in the model's channels."""
    def generate_takes(model, prompt, condition, duration, *args, takes=1, seed=None, **kwargs):
        assert takes == len(readings) and duration == pytest.approx(SECONDS)
        frames = math.ceil(duration * generation.FRAME_RATE)
        return [generation.Generated(torch.zeros((model.facts.codebooks, frames), dtype=torch.int64),
                                     readings[k][0] if model.facts.channels == 2
                                     else readings[k][0].mean(axis=0, keepdims=True),
                                     musicgen.SAMPLE_RATE, 2) for k in sorted(readings)]
    return generate_takes


def test_cli_remix_of_a_real_song_puts_a_drifting_band_on_its_beats_and_ranks_takes_by_beat_fidelity(
        tiny_weights, tiny_remixer, drifting_readings, tmp_path, monkeypatch, capsys):
    """The CLI in-process on a real song with madmom's real networks; generation's result is fixed to the
    song read at a drifting pace (wiring: beat-sync, fidelity, ranking, MIDI get exactly it). Beat-sync must
    put the band's beats back on the song's: madmom on the returned instrumental finds them there."""
    monkeypatch.setattr(generation, "generate_takes", stand_in_generation(drifting_readings))
    output = tmp_path / "fishin.wav"
    code = cli.main([str(SONG), "--prompt", "bossa nova", "--model-version", "chord", "--beat-tracker", "madmom",
                     "--end-time", str(SECONDS), "--takes", "2", "--seed", "2", "--beat-sync-threshold", "1.5",
                     "--return-analysis", "--return-midi", "--return-instrumental",
                     "--weights-dir", str(tiny_weights), "--offline", "--output", str(output)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "song: 176.0 bpm, 4/4, 12 bars (madmom); sections: not looked for (madmom finds none)" in printed
    analysis = json.loads(output.with_name("fishin.analysis.json").read_text())
    assert analysis["beat_tracker"] == "madmom" and analysis["sections_found"] is False
    assert analysis["bpm"] == pytest.approx(176, abs=1.5) and analysis["meter"] == 4
    assert len(analysis["downbeats"]) >= 10 and set(analysis["downbeats"]) <= set(analysis["beats"])
    song_beats, song_bars = np.array(analysis["beats"]), np.array(analysis["downbeats"])
    # Before beat-sync the stand-in's beats are off the song's (up to a fifth of a second): F well under 1.
    chosen = next(t["index"] for t in analysis["takes"] if t["chosen"])
    reading, tau = drifting_readings[chosen]
    unsynced = tiny_remixer.tracker.analyze_mix(reading, musicgen.SAMPLE_RATE).beats
    assert fidelity.beat_f(song_beats, unsynced) < 0.7
    # Beat-sync matched every bar and moved each by where the song's bar is heard in the reading (known).
    moved = analysis["beat_sync"]
    expected = np.abs(beats.heard_at(song_bars, tau, musicgen.SAMPLE_RATE) - song_bars)
    assert moved["anchors"] >= len(song_bars) - 1 and moved["threshold_s"] == 1.5
    assert moved["max_shift_s"] == pytest.approx(expected.max(), abs=0.05)
    # madmom on what came back: the band's beats on the song's, F >= 0.95 at 70 ms, median error <= 20 ms.
    instrumental, rate = sf.read(output.with_name("fishin.instrumental.wav"), always_2d=True)
    synced = np.array(tiny_remixer.tracker.analyze_mix(instrumental.T, rate).beats)
    assert fidelity.beat_f(song_beats, synced) >= 0.95
    assert np.median([np.min(np.abs(synced - b)) for b in song_beats]) <= 0.02
    # Beat fidelity is measured on every take (its beats through the sync's time map), ranked by the score.
    takes = analysis["takes"]
    assert [t["rank"] for t in takes] == [1, 2] and all(t["beat_f"] >= 0.95 for t in takes)
    assert takes[0]["score"] >= takes[1]["score"] and takes[0]["chosen"]
    assert analysis["fidelity"]["beat_f"] == takes[0]["beat_f"]
    assert "takes (best first): take" in printed
    assert re.search(r"fidelity: .*beat_f (0\.9[5-9]|1\.00)", printed)
    remix, rate = sf.read(output)
    assert rate == 44100 and abs(len(remix) - SECONDS * rate) <= 1  # the song's own rate
    # The MIDI file, read by another reader than the one that wrote it: the song's detected beats within 1 ms
    # (after the lead-in beat at 0), its bars on the grid's bar lines, the chords as their labels' notes.
    import pretty_midi

    from remixer.chords import chord_to_pitch_classes
    from tests.test_midi import assert_beats_and_bars_on_the_grid

    song_midi = pretty_midi.PrettyMIDI(str(output.with_name("fishin.midi.mid")))
    assert_beats_and_bars_on_the_grid(song_midi, analysis["beats"], analysis["downbeats"])
    for chord in analysis["chords"]:
        played = {n.pitch % 12 for n in song_midi.instruments[0].notes if abs(n.start - chord["start"]) < 2e-3}
        assert [int(pc in played) for pc in range(12)] == chord_to_pitch_classes(chord["label"]), chord
    assert "midi: " in printed


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


def test_the_song_bpm_the_tempo_input_checks_is_the_trackers(tiny_remixer, song_rhythm, tmp_path):
    too_fast = round(song_rhythm.bpm * (keytempo.TEMPO_RANGE[1] + 0.1), 1)
    request = RemixRequest.from_inputs(prompt="jazz", music_input=str(SONG), model_version="chord",
                                       beat_tracker="madmom", end_time=SECONDS, tempo=too_fast)
    with pytest.raises(keytempo.KeyTempoError, match=f"song's tempo of {song_rhythm.bpm:.1f} bpm"):
        tiny_remixer.remix(request, tmp_path)
    assert not list(tmp_path.iterdir())
