"""Takes: several remixes from one request, decoded as one batch, ranked by fidelity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from btc import ChordSegment
from remixer import decoding, fidelity, generation, pipeline, rhythm
from remixer.decoding import Sampling, WindowDecoder
from remixer.request import RemixRequest, RequestError
from remixer.testing.audio import write_song
from remixer.testing.musicgen import load_tiny

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = ["musicgen-tiny-chord", "musicgen-tiny-stereo-chord"]


def _record_logits(decoder) -> list[torch.Tensor]:
    seen = []
    real = decoding.Decoder.logits.__get__(decoder)  # the method itself, not an earlier recorder

    def logits(hidden):
        out = real(hidden)
        seen.append(out.clone())
        return out

    decoder.logits = logits
    return seen


@pytest.mark.parametrize("version", ["chord", "stereo-chord"])
def test_each_row_of_a_batched_decode_is_that_row_decoded_alone(version, tiny_weights):
    """Three takes with different prompts (as in a continuation window), greedy: every step's logits of each
    take's condition and null rows within 1e-4 of the same take decoded alone, and the same tokens."""
    model = load_tiny(tiny_weights / "musicgen" / f"musicgen-{version}.th", "cpu", tiny_weights)
    decoder = model.decoder_for()
    chroma = np.zeros((235, 12), np.float32)
    chroma[:, [2, 5, 9]] = 1
    prefix = generation.condition_prefix(model, generation.encode_text(model, "jazz"), chroma, guided=True)
    prompts = torch.randint(0, 2048, (3, model.facts.codebooks, 20), generator=torch.Generator().manual_seed(0))
    settings = Sampling(top_k=1, classifier_free_guidance=3.0)
    together_logits = _record_logits(decoder)
    plan = decoding.plan_window(prompts, 30, decoder.delays, "cpu")
    together = WindowDecoder(decoder).decode(prefix, plan, settings, None)
    for take in range(3):
        alone_logits = _record_logits(decoder)
        alone = WindowDecoder(decoder).decode(prefix, decoding.plan_window(prompts[take], 30, decoder.delays, "cpu"),
                                              settings, None)
        assert torch.equal(together[take], alone[0])
        assert len(alone_logits) == len(together_logits)
        for step, (batched, single) in enumerate(zip(together_logits, alone_logits)):
            rows = batched[[take, 3 + take]]  # the take under the condition and under the null condition
            torch.testing.assert_close(rows, single, atol=1e-4, rtol=0, msg=f"take {take} step {step}")
    del decoder.logits


@pytest.mark.parametrize("name", NAMES)
def test_every_greedy_take_gives_the_references_tokens(name, tmp_path, tiny_weights, monkeypatch):
    th = tmp_path / f"{name}.th"
    shutil.copy(FIXTURES / "musicgen" / f"{name}.th", th)
    reference = torch.load(FIXTURES / "musicgen" / f"{name}.reference.pt", weights_only=True)
    model = load_tiny(th, "cpu", tiny_weights)
    embedding = reference["text_embedding"]
    ones = torch.ones(embedding.shape[:2], dtype=torch.long)
    monkeypatch.setattr(generation, "encode_text", lambda *_: generation.EncodedText(ones, embedding, ones))
    case = reference["songs"]["long"]
    takes = generation.generate_takes(model, "a song", case["chroma"].numpy(), case["seconds"],
                                      Sampling(top_k=1, classifier_free_guidance=3.0), seed=0, takes=3)
    assert len(takes) == 3 and all(torch.equal(t.tokens, case["greedy_cfg3"][0]) for t in takes)


def test_sampled_takes_differ_and_a_seed_gives_the_same_takes(tiny_weights):
    model = load_tiny(tiny_weights / "musicgen" / "musicgen-chord.th", "cpu", tiny_weights)
    chroma = np.zeros((300, 12), np.float32)
    first = generation.generate_takes(model, "x", chroma, 1.5, seed=3, takes=3)
    again = generation.generate_takes(model, "x", chroma, 1.5, seed=3, takes=3)
    assert all(torch.equal(a.tokens, b.tokens) for a, b in zip(first, again))
    assert not torch.equal(first[0].tokens, first[1].tokens) and not torch.equal(first[1].tokens, first[2].tokens)
    assert all(t.seed == 3 and t.audio.shape == (1, int(1.5 * 32000)) for t in first)


# The analysis stages' results, pinned for the recording below: BTC and All-In-One make discrete choices from
# float features (a chord's argmax, a beat's peak), and on another CPU a last-bit difference can flip one and
# change the condition, and so every token after it. Pinned, only float noise is left, which the tolerance holds.
PINNED_RHYTHM = rhythm.Rhythm(bpm=120.0, beats=[0.5, 1.0, 1.5, 2.0, 2.5])  # no downbeat: beat-sync does not run
PINNED_CHORDS = [ChordSegment(0.0, 1.0, "C"), ChordSegment(1.0, 2.0, "A:min7"), ChordSegment(2.0, 3.0, "F:maj7")]
# int16 steps. Measured: the same remix on 1 and 2 torch threads differs by at most 1 step (RMS 0.05 step);
# a wrong wire (level, mix, vocals, sampling) moves it by thousands.
MAX_SAMPLE_STEPS = 16
MAX_RMS_STEPS = 2.0


def test_one_take_is_the_remix_before_takes(tmp_path, monkeypatch):
    """Recorded with the code before takes existed (fixture's 'recorded'), with the analysis stages pinned:
    the same tokens exactly, the same remix within a few int16 steps (float results move with the CPU)."""
    from remixer.pipeline import Remixer
    from remixer.tiny_weights import write_all

    recorded = json.loads((FIXTURES / "takes" / "one_take.json").read_text())
    expected, rate = sf.read(FIXTURES / "takes" / "one_take_remix.flac", dtype="int16", always_2d=True)
    write_all(tmp_path / "weights", seed=0)
    remixer = Remixer(tmp_path / "weights", "cpu", offline=True)
    monkeypatch.setattr(remixer.analyzer, "analyze", lambda stems: PINNED_RHYTHM)
    for recognizer in remixer.recognizers.values():
        monkeypatch.setattr(recognizer, "recognize", lambda samples, sample_rate: list(PINNED_CHORDS))
    seen = []
    real = generation.generate_takes

    def spy(*args, **kwargs):
        made = real(*args, **kwargs)
        seen.extend(made)
        return made

    monkeypatch.setattr(generation, "generate_takes", spy)
    song = write_song(tmp_path / "song.wav", 3.0)
    # The recording was made at 32 kHz, the rate every output had then (output_sample_rate=32000 keeps it), with
    # the published peak mix, the only one then (mix_balance=published keeps it).
    result = remixer.remix(RemixRequest.from_inputs(prompt="funk", music_input=str(song), model_version="stereo-chord",
                                                    seed=7, output_sample_rate="32000", mix_balance="published"),
                           tmp_path / "out")
    (take,) = seen
    assert take.tokens.tolist() == recorded["tokens"]
    remixed, remixed_rate = sf.read(result.remix, dtype="int16", always_2d=True)
    assert remixed_rate == rate and remixed.shape == expected.shape
    difference = remixed.astype(np.float64) - expected.astype(np.float64)
    assert np.abs(difference).max() <= MAX_SAMPLE_STEPS
    assert np.sqrt(np.mean(difference ** 2)) <= MAX_RMS_STEPS
    assert [t.rank for t in result.takes] == [1] and result.take_outputs == {}


# --- the pipeline with takes (fixed fidelity: the wiring) -------------------------------------------------


def test_wiring_the_best_take_is_returned_and_the_others_follow_in_rank_order(tiny_remixer, tmp_path, monkeypatch):
    """Fixed: the fidelity stage's numbers (take 2 best, then 3, then 1). Real: everything else."""
    scores = {1: fidelity.Fidelity(0.2, 0.1, None, {"beat_f": "no beats"}), 2: fidelity.Fidelity(0.9, 0.8, 0.7),
              3: fidelity.Fidelity(0.5, 0.5, 0.5)}
    measured = []
    real_measure = tiny_remixer._fidelity

    def fixed(synced, *args, **kwargs):
        real_measure(synced, *args, **kwargs)  # runs, so a broken measure still fails here
        measured.append(synced.instrumental)
        return scores[len(measured)]

    monkeypatch.setattr(tiny_remixer, "_fidelity", fixed)
    mixed = []
    real_mix = pipeline.mix.mix

    def spy_mix(instrumental, *args, **kwargs):
        mixed.append(instrumental)
        return real_mix(instrumental, *args, **kwargs)

    monkeypatch.setattr(pipeline.mix, "mix", spy_mix)
    song = write_song(tmp_path / "song.wav", 2.0)
    request = RemixRequest.from_inputs(prompt="x", music_input=str(song), model_version="chord", seed=5, takes=3,
                                       return_takes=True, return_analysis=True, return_instrumental=True,
                                       output_sample_rate="32000")  # the mix gets each take's own samples
    result = tiny_remixer.remix(request, tmp_path / "out")
    assert [p.name for p in result.outputs] == ["remix.wav", "instrumental.wav", "analysis.json", "analysis.png",
                                                "take2.wav", "take3.wav"]
    # The remix is take 2's instrumental, take2 output is take 3's, take3 is take 1's.
    assert len(measured) == 3 and len(mixed) == 3
    assert [np.array_equal(m, measured[i]) for m, i in zip(mixed, (1, 2, 0))] == [True, True, True]
    assert not np.array_equal(measured[0], measured[1])
    assert [(t.index, t.rank) for t in result.takes] == [(2, 1), (3, 2), (1, 3)]
    report = json.loads(result.analysis_json.read_text())
    assert report["fidelity"] == scores[2].as_dict()
    assert [t["index"] for t in report["takes"]] == [2, 3, 1] and [t["chosen"] for t in report["takes"]] == [
        True, False, False]
    assert report["takes"][2]["chord_majmin"] == 0.2 and report["takes"][2]["unmeasured"] == {"beat_f": "no beats"}
    assert report["takes"][0]["score"] == round(scores[2].score, 4)


def test_the_fidelity_reported_is_the_scorers(tiny_remixer, tmp_path, monkeypatch):
    """Fixed: the song's and the new music's rhythm (known beats and downbeats) and chords. The measure
    then runs for real: the numbers in analysis.json are what the scorer gives for those inputs."""
    from btc import ChordSegment
    from remixer import rhythm

    song_downbeats, new_downbeats = [0.5, 2.5, 4.5, 6.5], [0.4, 2.3, 4.2, 6.1]
    calls = []

    def analyze(stems):
        calls.append(1)
        downbeats = song_downbeats if len(calls) == 1 else new_downbeats
        beats = sorted({t + k * 0.5 for t in downbeats for k in range(4)})
        return rhythm.Rhythm(bpm=120.0, beats=beats, downbeats=list(downbeats))

    monkeypatch.setattr(tiny_remixer.analyzer, "analyze", analyze)
    song_chords = [ChordSegment(0.0, 4.0, "C"), ChordSegment(4.0, 8.0, "A:min")]
    new_chords = [ChordSegment(0.0, 3.8, "C"), ChordSegment(3.8, 8.0, "F")]
    recognizer = tiny_remixer.recognizers[True]
    answers = iter([song_chords, new_chords])
    monkeypatch.setattr(recognizer, "recognize", lambda *_: next(answers))
    song = write_song(tmp_path / "song.wav", 8.0)
    result = tiny_remixer.remix(RemixRequest.from_inputs(prompt="x", music_input=str(song), model_version="chord",
                                                         seed=2, return_analysis=True), tmp_path / "out")
    from remixer import beatsync

    time_map = beatsync.plan_sync(new_downbeats, song_downbeats, None, 120.0).map_time
    beats = sorted({t + k * 0.5 for t in new_downbeats for k in range(4)})
    expected = fidelity.measure(song_chords, sorted({t + k * 0.5 for t in song_downbeats for k in range(4)}),
                                new_chords, beats, time_map, 8.0)
    report = json.loads(result.analysis_json.read_text())
    assert report["fidelity"] == expected.as_dict() and result.fidelity == expected
    assert 0 < expected.chord_majmin < 1 and expected.beat_f > 0.5  # a real, not a trivial, comparison


def test_a_request_that_cannot_fit_is_refused_before_decoding_saying_what_fits(tiny_remixer, tmp_path, monkeypatch):
    model = tiny_remixer.load_version("chord")
    one = generation.decode_bytes(model, 1, 2.0)
    assert generation.decode_bytes(model, 4, 2.0) > 3.9 * one - generation.decode_bytes(model, 0, 2.0)
    two = generation.decode_bytes(model, 2, 2.0)  # with takes, the shared prefix copy is counted too
    assert two > 2 * one - generation.decode_bytes(model, 0, 2.0)
    monkeypatch.setattr(generation, "free_bytes", lambda device: two + (generation.decode_bytes(model, 3, 2.0) - two) // 2)
    decoded = []
    monkeypatch.setattr(generation, "generate_takes", lambda *a, **k: decoded.append(1))
    song = write_song(tmp_path / "song.wav", 2.0)
    with pytest.raises(pipeline.RemixerError, match=r"4 take\(s\) of chord need about .* GiB .* free: ask for takes=2"):
        tiny_remixer.remix(RemixRequest.from_inputs(prompt="x", music_input=str(song), model_version="chord",
                                                    takes=4), tmp_path / "out")
    assert decoded == []


@pytest.mark.parametrize("value,message", [(0, "takes must be >= 1"), (5, "takes must be <= 4"),
                                           ("two", "takes: 'two' is not a int")])
def test_bad_takes_are_refused_with_the_range(value, message, tmp_path):
    song = write_song(tmp_path / "song.wav", 1.0)
    with pytest.raises(RequestError, match=message):
        RemixRequest.from_inputs(prompt="x", music_input=str(song), takes=value)


def test_inputs_left_as_none_take_their_defaults(tmp_path):
    song = write_song(tmp_path / "song.wav", 1.0)
    request = RemixRequest.from_inputs(prompt="x", music_input=str(song), takes=None, return_takes=None, top_k=None)
    assert (request.takes, request.return_takes, request.top_k) == (1, False, 250)


def test_wiring_a_beatless_song_still_gets_chord_numbers_and_its_takes_rank_by_them(tiny_remixer, tmp_path,
                                                                                     monkeypatch):
    """Fixed: the chord recognizer (the song's chords first, then each take's new music: take 2 plays them,
    take 1 does not). Real: everything else; random All-In-One finds no beat, so nothing is synced and the
    new music is on the song's timeline already (the identity time map)."""
    song_chords = [ChordSegment(0.0, 1.0, "C"), ChordSegment(1.0, 2.0, "A:min")]
    heard = {2: [ChordSegment(0.0, 1.0, "F#"), ChordSegment(1.0, 2.0, "D#:min")], 3: song_chords}
    for recognizer in tiny_remixer.recognizers.values():
        calls = []
        monkeypatch.setattr(recognizer, "recognize",
                            lambda samples, rate, calls=calls: (calls.append(1), heard.get(len(calls),
                                                                                          song_chords))[1])
    song = write_song(tmp_path / "song.wav", 2.0)
    result = tiny_remixer.remix(RemixRequest.from_inputs(prompt="x", music_input=str(song), model_version="chord",
                                                         seed=5, takes=2, return_analysis=True), tmp_path / "out")
    report = json.loads(result.analysis_json.read_text())
    assert report["bpm"] is None and report["downbeats"] == []  # no beat found: nothing was synced
    assert [t["index"] for t in report["takes"]] == [2, 1] and report["takes"][0]["chosen"]
    best, other = report["takes"]
    assert best["chord_majmin"] == 1.0 and other["chord_majmin"] == 0.0
    assert best["beat_f"] is None and best["unmeasured"] == {"beat_f": "no beats were found in the song"}
    assert report["fidelity"]["chord_majmin"] == 1.0 and result.takes[0].index == 2
