"""MusiConGen: chord and beat frames, the model through our loader and decode loop, against fixtures made
with the reference code itself (../shared/testdata/musicongen, its README says how)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from btc import LARGE_VOCABULARY, ChordSegment
from remixer import conditions, decoding, generation, musicgen, rhythm
from remixer.decoding import Sampling, WindowDecoder
from remixer.request import RemixRequest
from remixer.testing.musicgen import load_tiny
from tests.conftest import SHARED, write_song
from tests.test_capture import FakeGraphs, spy_steps

DATA = SHARED / "musicongen"
GREEDY_CFG3 = Sampling(top_k=1, classifier_free_guidance=3.0)  # the reference's greedy decoding, CFG 3
# The reference's chord table (its data/chords.py shorthands, as semitones above the root): facts, for
# the qualities BTC's large vocabulary names.
REFERENCE_QUALITIES = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8), "min6": (0, 3, 7, 9),
    "maj6": (0, 4, 7, 9), "min7": (0, 3, 7, 10), "minmaj7": (0, 3, 7, 11), "maj7": (0, 4, 7, 11),
    "7": (0, 4, 7, 10), "dim7": (0, 3, 6, 9), "hdim7": (0, 3, 6, 10), "sus2": (0, 2, 7), "sus4": (0, 5, 7),
}


@pytest.fixture(scope="module")
def reference():
    inputs = json.loads((DATA / "inputs.json").read_text())
    tensors = torch.load(DATA / "tensors.pt", weights_only=True)
    return inputs, tensors


def _song_frames(inputs) -> conditions.SongFrames:
    segments = [ChordSegment(start, end, label) for start, end, label in inputs["chord_segments"]]
    beats = inputs["beat_times_s"]
    downbeats = [t for t, position in zip(beats, inputs["beat_positions"]) if position == 1]
    return conditions.song_frames(segments, beats, downbeats, inputs["duration_s"])


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_weights):
    """The reference's exported checkpoint, read by our loader from a folder of its published name."""
    folder = tmp_path_factory.mktemp("weights") / "musicongen"
    folder.mkdir()
    shutil.copy(DATA / "state_dict.bin", folder / "state_dict.bin")  # its conversion cache goes beside it
    return load_tiny(folder / "state_dict.bin", "cpu", tiny_weights)


@pytest.fixture
def fixed_text(monkeypatch, reference):
    """T5's output replaced by the fixture's text embedding (the reference ran a stand-in for T5)."""
    embedding = reference[1]["text_embedding"]
    ones = torch.ones(embedding.shape[:2], dtype=torch.long)
    monkeypatch.setattr(generation, "encode_text", lambda _model, _text: generation.EncodedText(ones, embedding, ones))


# --- conditions ---------------------------------------------------------------------------------------------


def test_chord_and_beat_frames_equal_the_reference_featurizers(reference):
    inputs, tensors = reference
    frames = _song_frames(inputs)
    assert np.array_equal(frames.chord, tensors["chord"].numpy())  # exactly, float64
    assert np.array_equal(frames.beat, tensors["beat"].numpy())
    window = conditions.window(frames, 0.0)
    assert np.array_equal(window.prefix, tensors["chord_prefix"].numpy().T)
    # The float64 truncation traps: 17.9 s and 18.4 s land one frame early, as in the reference.
    assert frames.beat[0, 894] == pytest.approx(0.9) and frames.beat[0, 919] == pytest.approx(0.9)
    assert frames.beat.max() == pytest.approx(1.9)  # a downbeat: 0.9 smoothed + 1 unsmoothed


def test_every_btc_label_maps_onto_the_reference_chord_table():
    names = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
    for label in LARGE_VOCABULARY:
        vector = conditions.chord_vector(label)
        if label == "N":
            assert not vector.any()
            continue
        if label == "X":
            assert (vector == -1).all()
            continue
        root, _, quality = label.partition(":")
        expected = np.zeros(12)
        expected[[(names.index(root) + i) % 12 for i in REFERENCE_QUALITIES[quality or "maj"]]] = 1
        assert np.array_equal(vector, expected), label
    # A slash bass adds its interval, as the reference's `ivs[bass] = 1`: C/b7 holds B flat.
    assert conditions.chord_vector("C:maj/b7")[10] == 1 and conditions.chord_vector("C:maj")[10] == 0


def test_a_window_past_the_songs_end_continues_from_its_start():
    frames = conditions.SongFrames(np.arange(12 * 2250, dtype=float).reshape(12, 2250),
                                   np.arange(2250, dtype=float)[None])
    late = conditions.window(frames, 18.0)  # 45 s song, second window: frames 900 .. 2399
    assert late.beat[0, 0] == 900 and late.beat[0, 1349] == 2249 and late.beat[0, 1350] == 0
    assert late.prefix.shape == (235, 12) and late.prefix[0, 0] == 900


# --- the model against the reference ------------------------------------------------------------------------


def test_our_loader_reads_the_export_layout_with_its_facts(model):
    facts = model.facts
    assert (facts.version, facts.channels, facts.codebooks, facts.hidden_size, facts.layers) == \
        ("musicongen", 1, 4, 32, 9)
    assert facts.in_attention == (4, 8) and facts.plays_on_beats
    assert tuple(model.beat_proj.weight.shape) == (32, 1)


def test_greedy_tokens_equal_the_reference_through_our_decode_loop(model, reference, fixed_text):
    """One 30 s window, greedy, CFG 3, the fixture's drifting beat and chords: every one of 6000 tokens."""
    inputs, tensors = reference
    seen = []
    real = decoding.Decoder.logits

    def record(self, hidden):
        out = real(self, hidden)
        seen.append(out.clone())
        return out

    decoding.Decoder.logits, saved = record, real
    try:
        (take,) = generation.generate_takes(model, inputs["description"], _song_frames(inputs), 30.0, GREEDY_CFG3,
                                            seed=1)
    finally:
        decoding.Decoder.logits = saved
    assert torch.equal(take.tokens, tensors["tokens"])
    # The first three LM calls' conditional and null logits (rows: condition, null), within float32 noise.
    first = torch.stack(seen[:3])  # (3, 2, 4, 2048)
    np.testing.assert_allclose(first.numpy(), tensors["logits_first_steps"].numpy(), atol=1e-4, rtol=0)


def test_the_graph_step_gives_the_reference_tokens(model, reference, fixed_text):
    """The CUDA-graph step (device-side position, the step's condition read from the device buffer at it,
    the static cache) through the CPU stand-in of tests/test_capture.py: the same 6000 tokens."""
    inputs, tensors = reference
    frames = conditions.window(_song_frames(inputs), 0.0)
    text = generation.encode_text(model, inputs["description"])
    prefix = generation.condition_prefix(model, text, frames.prefix.astype(np.float32), guided=True)
    steps = generation.step_sums(model, frames, guided=True)
    decoder = model.decoder_for()
    plan = decoding.plan_window(torch.zeros((4, 0), dtype=torch.long), 1500, decoder.delays, decoder.device)
    graphs = FakeGraphs()
    window = WindowDecoder(decoder, use_cuda_graph=True, graphs=graphs)
    spy_steps(window, graphs)
    tokens = window.decode(prefix, plan, GREEDY_CFG3, torch.Generator().manual_seed(1), steps=steps)[0]
    assert window.modes == [decoding.GRAPH] and graphs.recorded is not None
    assert torch.equal(tokens, tensors["tokens"])


def test_the_null_row_hears_nothing_and_the_beat_matters(model, reference):
    inputs, _ = reference
    frames = conditions.window(_song_frames(inputs), 0.0)
    steps = generation.step_sums(model, frames, guided=True)
    assert steps.shape == (2, 1504, 32) and not steps[1].any()  # null: no chord, no beat, no bias
    assert not steps[0, 1500:].any() and steps[0, :1500].abs().sum(dim=1).min() > 0
    shifted = conditions.WindowFrames(frames.chord, np.roll(frames.beat, 1, axis=1))
    assert not torch.equal(generation.step_sums(model, shifted, guided=True), steps)


# --- the whole song -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_musicongen(tiny_weights):
    return load_tiny(tiny_weights / "musicongen" / "state_dict.bin", "cpu", tiny_weights)


def test_wiring_each_window_of_a_45_s_song_hears_its_own_slice(tiny_musicongen, monkeypatch):
    """Fixed: nothing; spies on what each window's decode receives. A 45 s song has windows at 0 and 18 s:
    the second's prefix and per-position sums are those of song frames 900 .. 2399 (past 2250, the song's
    end, from its start), not the opening's."""
    chords_ = [ChordSegment(t, t + 2.0, label) for t, label in zip(np.arange(0, 46, 2.0), ["C", "F", "G:7"] * 8)]
    beats = list(np.arange(0.25, 45, 0.5))
    frames = conditions.song_frames(chords_, beats, beats[::4], 45.0)
    seen = []
    real = WindowDecoder.decode

    def spy(self, prefix, plan, settings, generator, progress=None, steps=None):
        seen.append((prefix.clone(), steps.clone(), plan.first))
        return real(self, prefix, plan, settings, generator, progress, steps)

    monkeypatch.setattr(WindowDecoder, "decode", spy)
    generation.generate_takes(tiny_musicongen, "funk", frames, 45.0, Sampling(top_k=5), seed=3)
    assert len(seen) == 2
    for (prefix, steps, _first), start in zip(seen, (0.0, 18.0)):
        own = conditions.window(frames, start)
        text = generation.encode_text(tiny_musicongen, "funk")
        expected_prefix = generation.condition_prefix(tiny_musicongen, text, own.prefix.astype(np.float32), True)
        assert torch.equal(prefix, expected_prefix)
        assert torch.equal(steps, generation.step_sums(tiny_musicongen, own, guided=True))
    assert seen[1][2] == 1 + 600  # the continuation window is prompted with the last 12 s
    assert not torch.equal(seen[0][1], seen[1][1])


def test_a_chord_model_refuses_beat_frames_and_musicongen_a_chroma(tiny_musicongen, tiny_weights):
    chord_model = load_tiny(tiny_weights / "musicgen" / "musicgen-chord.th", "cpu", tiny_weights)
    frames = conditions.song_frames([], [0.5], [0.5], 2.0)
    with pytest.raises(musicgen.GenerationError, match="chord is conditioned on a chord chroma"):
        generation.generate_takes(chord_model, "x", frames, 2.0, seed=1)
    with pytest.raises(musicgen.GenerationError, match="musicongen is conditioned on chord and beat frames"):
        generation.generate_takes(tiny_musicongen, "x", np.zeros((60, 12), np.float32), 2.0, seed=1)


# --- the pipeline -------------------------------------------------------------------------------------------

SONG_BEATS = [0.3, 0.8, 1.3, 1.8, 2.3, 2.8, 3.3, 3.8]  # 120 bpm, downbeats every 4 beats


def test_wiring_a_musicongen_remix_is_conditioned_on_the_songs_beats_and_chords(remixer, tmp_path, monkeypatch):
    """Fixed: the rhythm stage (the song's beats and downbeats; none in the new music) and the chords. Real:
    everything else, through the Remixer with the tiny MusiConGen. Generation gets exactly the frames of
    those beats and chords and the prompt alone (MusiConGen reads no bpm)."""
    found = rhythm.Rhythm(bpm=120.0, beats=SONG_BEATS, downbeats=SONG_BEATS[::4])
    calls = []
    monkeypatch.setattr(remixer.analyzer, "analyze", lambda stems: (calls.append(1), found if len(calls) == 1
                                                                    else rhythm.Rhythm(None))[1])
    song_chords = [ChordSegment(0.0, 2.0, "A:min7"), ChordSegment(2.0, 4.0, "D:7")]
    answers = iter([song_chords, song_chords])
    monkeypatch.setattr(remixer.recognizers[True], "recognize", lambda *_: list(next(answers)))
    received = []
    real = generation.generate_takes
    monkeypatch.setattr(generation, "generate_takes", lambda *a, **k: (received.append((a, k)), real(*a, **k))[1])
    song = write_song(tmp_path / "song.wav", 4.0)
    result = remixer.remix(RemixRequest.from_inputs(prompt="funk", music_input=str(song), model_version="musicongen",
                                                    seed=2, return_analysis=True), tmp_path / "out")
    ((model, prompt, condition, duration, _), kwargs), = received
    expected = conditions.song_frames(song_chords, SONG_BEATS, SONG_BEATS[::4], 4.0)
    assert model.facts.version == "musicongen" and prompt == "funk" and kwargs["bpm"] is None
    assert np.array_equal(condition.chord, expected.chord) and np.array_equal(condition.beat, expected.beat)
    report = json.loads(result.analysis_json.read_text())
    assert report["model_version"] == "musicongen" and report["prompt"] == "funk"
    assert report["beat_sync"] == {"anchors": 0, "max_shift_s": 0.0, "median_shift_s": 0.0,
                                   "threshold_s": round(0.25 * 60 / report["bpm"], 4)}  # a quarter beat
    assert "conditions" in result.timings and "chroma" not in result.timings
    assert result.remix.exists() and result.sample_rate == 44100  # the song's rate


def test_a_song_with_no_beat_found_is_refused_naming_the_chord_versions(remixer, tmp_path):
    """Real: every stage (random All-In-One finds no beat)."""
    song = write_song(tmp_path / "song.wav", 3.0)
    with pytest.raises(musicgen.GenerationError, match=r"musicongen plays on the song's own beats, but no beat was "
                       r"found in 'song.wav' by all-in-one: try beat_tracker=madmom, or remix this song with a "
                       r"chord model_version \(stereo-chord, "):
        remixer.remix(RemixRequest.from_inputs(prompt="x", music_input=str(song), model_version="musicongen"),
                      tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_manifest_lists_musicongens_published_files_with_their_licence():
    from remixer import weights

    files = weights.files_of([musicgen.component_for("musicongen")])
    assert [f.name for f in files] == ["musicongen/state_dict.bin", "musicongen/compression_state_dict.bin"]
    assert all("huggingface.co/Cyan0731/MusiConGen/resolve/main/" in f.url for f in files)
    assert all(f.licence == weights.CC_BY_NC for f in files)


def test_a_codec_pointer_to_another_codec_is_refused(tmp_path):
    from remixer import models

    path = tmp_path / "compression_state_dict.bin"
    torch.save({"pretrained": "facebook/encodec_24khz", "exported": True, "version": "1.0.0"}, path)
    with pytest.raises(musicgen.GenerationError, match="points to the codec 'facebook/encodec_24khz'"):
        models.check_codec_pointer(path)
    torch.save({"pretrained": "facebook/encodec_32khz", "exported": True, "version": "1.0.0"}, path)
    models.check_codec_pointer(path)
    assert Path(path).exists()
