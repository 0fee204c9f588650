"""Wiring tests: one stage's result fixed, the next stage must receive exactly it.

With random weights All-In-One finds no beats and BTC finds noise chords, so an
end-to-end run cannot show that beat-sync gets the right downbeats or that the
request's chord settings reach generation. Here the real `Remixer` runs every
stage with the tiny weights, except one stage whose result is fixed (named in
each test: a known rhythm, a known chord list, known generated music); spies
record what the following stages receive. Nothing else is replaced.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from btc import ChordSegment
from remixer import beatsync, chords, fidelity, generation, mix, rhythm, separation
from remixer.request import RemixRequest
from tests.conftest import dominant_frequency, tone, write_song

SR = 44100
SECONDS = 8.0
SONG_DOWNBEATS = [0.5, 2.5, 4.5, 6.5]  # 120 bpm, 4/4
GENERATED_DOWNBEATS = [0.4, 2.3, 4.2, 6.1]  # the new band 5% fast, a little early
KNOWN_CHORDS = [ChordSegment(0.0, 3.0, "D:min7"), ChordSegment(3.0, 5.5, "G:7"), ChordSegment(5.5, SECONDS, "C:maj7")]


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    return write_song(tmp_path_factory.mktemp("wiring") / "song.wav", SECONDS, 220, 330)


class Spy:
    """Wraps a callable, records each call's arguments, returns what the real one returns (or `result`)."""

    def __init__(self, real, result=None):
        self.real, self.result, self.calls = real, result, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        out = self.real(*args, **kwargs)
        return out if self.result is None else self.result(len(self.calls), out, *args, **kwargs)


def _known_rhythm(song_downbeats=SONG_DOWNBEATS, generated_downbeats=GENERATED_DOWNBEATS):
    """The rhythm stage fixed: the song's downbeats on its first call, the generated music's on the second."""

    def fixed(call, _real, _stems):
        downbeats = song_downbeats if call == 1 else generated_downbeats
        beats = sorted({t + k * 0.5 for t in downbeats for k in range(4)})
        return rhythm.Rhythm(bpm=120.0 if call == 1 else 126.0, beats=beats, downbeats=list(downbeats))

    return fixed


def _clicks(times, length, rate, channels):
    """Known generated music: a short click on each generated downbeat, silence between."""
    out = np.zeros((channels, length), np.float32)
    burst = np.hanning(64).astype(np.float32) * 0.9
    for t in times:
        start = int(round(t * rate))
        out[:, start:start + 64] = burst
    return out


def _with_clicks(generated: generation.Generated) -> generation.Generated:
    """A take's audio replaced by clicks on the generated downbeats (tokens and seed kept)."""
    audio = _clicks(GENERATED_DOWNBEATS, generated.audio.shape[1], generated.sample_rate, generated.audio.shape[0])
    return generation.Generated(generated.tokens, audio, generated.sample_rate, generated.seed)


def _click_times(audio: np.ndarray, rate: int) -> list[float]:
    envelope = np.abs(audio).max(axis=0)
    above = np.flatnonzero(envelope > 0.5 * envelope.max())
    groups = np.split(above, np.flatnonzero(np.diff(above) > rate // 10) + 1)
    return [float(group[np.argmax(envelope[group])]) / rate for group in groups if len(group)]


def test_wiring_beat_sync_gets_both_downbeat_lists_in_order_and_lands_clicks_on_the_songs_downbeats(
        remixer, song, tmp_path, monkeypatch):
    """Fixed: the rhythm stage (song and generated downbeats) and the generated music (clicks on
    the generated downbeats). Real: decode, separation, chords, generation, beat-sync, mix, encode."""
    analyze = Spy(remixer.analyzer.analyze, _known_rhythm())
    monkeypatch.setattr(remixer.analyzer, "analyze", analyze)
    separate = Spy(remixer.separator.separate)
    monkeypatch.setattr(remixer.separator, "separate", separate)

    def clicks_instead(_call, made, *args, **kwargs):
        return [_with_clicks(generated) for generated in made]

    monkeypatch.setattr(generation, "generate_takes", Spy(generation.generate_takes, clicks_instead))
    sync = Spy(beatsync.sync_to_downbeats)
    monkeypatch.setattr(beatsync, "sync_to_downbeats", sync)

    request = RemixRequest.from_inputs(prompt="funk", music_input=song, model_version="chord", seed=4,
                                       beat_sync_threshold=0.45, return_instrumental=True,
                                       normalization_strategy="peak")
    result = remixer.remix(request, tmp_path)

    # The generated music is separated and analysed: the second separation gets exactly it.
    (song_args, _), (generated_args, _) = separate.calls
    assert generated_args[1] == generation.SAMPLE_RATE
    assert np.array_equal(generated_args[0], _clicks(GENERATED_DOWNBEATS, int(SECONDS * 32000), 32000, 1))
    ((audio_in, rate, generated_downbeats, target_downbeats), kwargs), = sync.calls
    assert rate == generation.SAMPLE_RATE
    assert list(generated_downbeats) == GENERATED_DOWNBEATS and list(target_downbeats) == SONG_DOWNBEATS
    # the request's threshold, the song's tempo; the whole instrumental searched (no band parts stacked)
    assert kwargs == {"threshold": 0.45, "bpm": 120.0, "search_channels": None}
    # On the output: every click now sits on one of the song's downbeats.
    instrumental, rate = sf.read(result.instrumental, dtype="float32", always_2d=True)
    clicks = _click_times(instrumental.T, rate)
    assert len(clicks) == len(SONG_DOWNBEATS)
    assert np.max(np.abs(np.array(clicks) - SONG_DOWNBEATS)) < 0.003, clicks
    remix, _ = sf.read(result.remix, dtype="float32", always_2d=True)
    assert np.abs(remix).max() > 0  # vocals mixed over the synced clicks


def test_wiring_no_song_downbeats_means_no_sync_and_no_second_analysis(remixer, song, tmp_path, monkeypatch):
    """Fixed: the rhythm stage finds no downbeats in the song."""
    analyze = Spy(remixer.analyzer.analyze, lambda *_: rhythm.Rhythm(bpm=None))
    monkeypatch.setattr(remixer.analyzer, "analyze", analyze)
    sync = Spy(beatsync.sync_to_downbeats)
    monkeypatch.setattr(beatsync, "sync_to_downbeats", sync)
    remixer.remix(RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord", seed=1), tmp_path)
    assert len(analyze.calls) == 1 and sync.calls == []


@pytest.mark.parametrize("large", [True, False])
def test_wiring_known_chords_reach_generation_as_chroma_times_the_coefficient(
        large, remixer, song, tmp_path, monkeypatch):
    """Fixed: the chord recognizer's result (a known chord list). Real: everything else."""
    used = {}
    for vocabulary, recognizer in remixer.recognizers.items():
        spy = Spy(recognizer.recognize, lambda *_args, **_kw: list(KNOWN_CHORDS))
        monkeypatch.setattr(recognizer, "recognize", spy)
        used[vocabulary] = spy
    generate = Spy(generation.generate_takes)
    monkeypatch.setattr(generation, "generate_takes", generate)

    request = RemixRequest.from_inputs(prompt="jazz", music_input=song, model_version="chord", seed=2,
                                       large_chord_voca=large, chroma_coefficient=1.7)
    result = remixer.remix(request, tmp_path)

    # large_chord_voca picks the recognizer: once for the song, once for the new music's fidelity.
    assert len(used[large].calls) == 2 and used[not large].calls == []
    (heard, rate), _ = used[large].calls[0]
    assert rate == separation.SAMPLE_RATE
    assert heard.shape == (2, int(SECONDS * SR))
    (args, kwargs), = generate.calls
    chroma = args[2]
    expected = chords.segments_to_chroma(KNOWN_CHORDS, SECONDS, 1.7)
    assert np.array_equal(chroma, expected) and np.unique(chroma).tolist() == pytest.approx([0.0, 1.7])
    found = [(c.start, c.end, c.label) for c in result.analysis.chords]
    assert found == [(c.start, c.end, c.label) for c in KNOWN_CHORDS]


def test_wiring_chords_listen_to_the_drumless_stems_and_the_mix_gets_the_vocals(
        remixer, song, tmp_path, monkeypatch):
    """Fixed: nothing; spies on the separation result, the recognizer's input and the mix's vocals."""
    separate = Spy(remixer.separator.separate)
    monkeypatch.setattr(remixer.separator, "separate", separate)
    recognizer = remixer.recognizers[True]
    recognize = Spy(recognizer.recognize)
    monkeypatch.setattr(recognizer, "recognize", recognize)
    conform = Spy(mix.conform)
    monkeypatch.setattr(mix, "conform", conform)
    remixer.remix(RemixRequest.from_inputs(prompt="x", music_input=song, seed=5), tmp_path)  # stereo model

    # Spy on the real separation's output through a second call with the same input: deterministic.
    (song_samples, song_rate), _ = separate.calls[0]
    stems = remixer.separator.separate(song_samples, song_rate)
    (heard, _), _ = recognize.calls[0]
    np.testing.assert_array_equal(heard, stems.drumless)
    # The mix gets the song's own vocals, from demucs' rate straight to the output's (the song's 44.1 kHz).
    (vocals, vocals_rate, rate, channels, length), _ = next(
        call for call in conform.calls if call[0][0].shape == stems.vocals.shape
        and np.array_equal(call[0][0], stems.vocals))
    assert (vocals_rate, rate, channels, length) == (separation.SAMPLE_RATE, SR, 2, int(SECONDS * SR))


def test_wiring_sampling_settings_seed_prompt_and_model_reach_generation(remixer, song, tmp_path, monkeypatch):
    """Fixed: the rhythm stage (a known tempo, so the prompt gets its bpm)."""
    monkeypatch.setattr(remixer.analyzer, "analyze",
                        Spy(remixer.analyzer.analyze, lambda *_: rhythm.Rhythm(bpm=97.4)))
    generate = Spy(generation.generate_takes)
    monkeypatch.setattr(generation, "generate_takes", generate)
    request = RemixRequest.from_inputs(prompt="bossa nova", music_input=song, model_version="chord", seed=123,
                                       top_k=7, top_p=0.3, temperature=0.8, classifier_free_guidance=2)
    result = remixer.remix(request, tmp_path)
    (model, prompt, _chroma, duration, sampling), kwargs = generate.calls[0]
    assert model.facts.version == "chord"
    assert prompt == "bossa nova" and duration == pytest.approx(SECONDS)
    assert sampling == generation.Sampling(top_k=7, top_p=0.3, temperature=0.8, classifier_free_guidance=2)
    assert kwargs["seed"] == 123 and kwargs["bpm"] == 97.4 and result.seed == 123
    assert generation.build_prompt(prompt, kwargs["bpm"]) == "bossa nova, bpm : 97"


def test_sampling_settings_change_the_tokens(mono_model):
    """Each sampling input changes what the sampler draws (same seed), so a dropped one shows."""
    chroma = chords.segments_to_chroma(KNOWN_CHORDS, 2.0)
    base = generation.Sampling(top_k=50, top_p=0.0, temperature=1.0, classifier_free_guidance=3.0)
    reference = generation.generate(mono_model, "x", chroma, 1.0, base, seed=9).tokens
    for change in (dict(top_k=2), dict(top_p=0.5), dict(temperature=0.3), dict(classifier_free_guidance=0.0)):
        varied = generation.Sampling(**{**base.__dict__, **change})
        assert not torch.equal(generation.generate(mono_model, "x", chroma, 1.0, varied, seed=9).tokens,
                               reference), change


@pytest.fixture(scope="module")
def mono_model(remixer):
    return remixer.load_version("chord")


@pytest.fixture(scope="module")
def stereo_model(remixer):
    return remixer.load_version("stereo-chord")


def test_stereo_tokens_decode_left_and_right_from_interleaved_codebooks(stereo_model, mono_model):
    """Codebooks 0, 2, 4, 6 are the left channel and 1, 3, 5, 7 the right (interleaved)."""
    frames = 50
    generator = torch.Generator().manual_seed(0)
    left = torch.randint(0, 2048, (4, frames), generator=generator)
    right = torch.randint(0, 2048, (4, frames), generator=generator)
    interleaved = torch.stack([left, right], dim=1).reshape(8, frames)
    audio = generation.decode_tokens(stereo_model, interleaved)
    expected_left = generation.decode_tokens(mono_model, left)[0]
    expected_right = generation.decode_tokens(mono_model, right)[0]
    assert audio.shape == (2, frames * 640)
    assert np.abs(expected_left - expected_right).max() > 1e-3  # the two channels are clearly different
    np.testing.assert_allclose(audio[0], expected_left, atol=1e-6, rtol=0)
    np.testing.assert_allclose(audio[1], expected_right, atol=1e-6, rtol=0)


def test_stereo_generation_keeps_the_channel_order_through_generate(stereo_model):
    result = generation.generate(stereo_model, "x", chords.segments_to_chroma(KNOWN_CHORDS, 2.0), 0.5,
                                 generation.Sampling(top_k=20), seed=3)
    codes = result.tokens
    left = generation.decode_tokens(stereo_model, torch.stack([codes[0::2], codes[0::2]], 1).reshape(8, -1))[0]
    right = generation.decode_tokens(stereo_model, torch.stack([codes[1::2], codes[1::2]], 1).reshape(8, -1))[1]
    np.testing.assert_allclose(result.audio[0], left[:result.audio.shape[1]], atol=1e-6, rtol=0)
    np.testing.assert_allclose(result.audio[1], right[:result.audio.shape[1]], atol=1e-6, rtol=0)


def test_stereo_vocals_keep_their_channel_order_in_the_mix():
    vocals = np.stack([tone(440, 2.0, SR, channels=1)[0], tone(660, 2.0, SR, channels=1)[0]])
    prepared = mix.prepare_vocals(vocals, SR, 32000, 2, 64000)
    assert dominant_frequency(prepared[0], 32000) == pytest.approx(440, abs=2)
    assert dominant_frequency(prepared[1], 32000) == pytest.approx(660, abs=2)
    quiet = np.zeros((2, 64000), np.float32)
    quiet[:, ::997] = 1e-4  # an almost silent instrumental: the mix is the vocals
    remix = mix.mix(quiet, prepared, 32000, "peak").remix
    assert dominant_frequency(remix[0], 32000) == pytest.approx(440, abs=2)
    assert dominant_frequency(remix[1], 32000) == pytest.approx(660, abs=2)


def test_wiring_gpu_out_of_memory_is_explained_and_the_next_request_runs(remixer, song, tmp_path, monkeypatch):
    """Fixed: generation runs out of GPU memory once (as CUDA reports it)."""
    from remixer.pipeline import OutOfGPUMemory

    real = generation.generate_takes
    calls = []

    def once_out_of_memory(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "generate_takes", once_out_of_memory)
    request = RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord", seed=1)
    with pytest.raises(OutOfGPUMemory, match="ran out of memory remixing 'song.wav' with chord: try a shorter"):
        remixer.remix(request, tmp_path / "a")
    assert remixer.remix(request, tmp_path / "b").remix.exists()


def test_wiring_given_chords_lie_on_the_songs_bars_and_reach_generation(remixer, song, tmp_path, monkeypatch):
    """Fixed: the rhythm stage (the song's downbeats). The song's chords are not recognised: the one
    recognition is of the new music's drumless stems, for its fidelity."""
    monkeypatch.setattr(remixer.analyzer, "analyze", Spy(remixer.analyzer.analyze, _known_rhythm()))
    for recognizer in remixer.recognizers.values():
        monkeypatch.setattr(recognizer, "recognize", Spy(recognizer.recognize))
    separate = Spy(remixer.separator.separate)
    monkeypatch.setattr(remixer.separator, "separate", separate)
    generate = Spy(generation.generate_takes)
    monkeypatch.setattr(generation, "generate_takes", generate)
    request = RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord", seed=1,
                                       chords="C G Am F7", return_analysis=True)
    result = remixer.remix(request, tmp_path)
    (heard, _), _ = [call for r in remixer.recognizers.values() for call in r.recognize.calls][0]
    assert sum(len(r.recognize.calls) for r in remixer.recognizers.values()) == 1
    (new_music, rate), _ = separate.calls[1]
    assert rate == generation.SAMPLE_RATE
    np.testing.assert_array_equal(heard, remixer.separator.separate.real(new_music, rate).drumless)
    chroma = generate.calls[0][0][2]
    bars = [0.0, *SONG_DOWNBEATS[1:], SECONDS]  # the first bar also holds the pickup
    for index, (start, end) in enumerate(zip(bars[:-1], bars[1:])):
        frame = int(((start + end) / 2) / chords.FRAME_SECONDS)
        expected = chords.chord_to_pitch_classes(["C", "G", "Am", "F7"][index % 4])
        assert chroma[frame].tolist() == expected, (index, chroma[frame])
    report = json.loads(result.analysis_json.read_text())
    assert [c["label"] for c in report["chords"]] == ["C", "G", "Am", "F7"] and report["chords_source"] == "given"
    assert report["meter"] == 4 and report["downbeats"] == SONG_DOWNBEATS


def test_wiring_stems_follow_the_same_time_map_and_add_up(remixer, song, tmp_path, monkeypatch):
    """Fixed: the rhythm stage and the generated music (clicks), as in the beat-sync test above."""
    monkeypatch.setattr(remixer.analyzer, "analyze", Spy(remixer.analyzer.analyze, _known_rhythm()))

    def clicks_instead(_call, made, *args, **kwargs):
        return [_with_clicks(generated) for generated in made]

    monkeypatch.setattr(generation, "generate_takes", Spy(generation.generate_takes, clicks_instead))
    separate = Spy(remixer.separator.separate)
    monkeypatch.setattr(remixer.separator, "separate", separate)
    sync = Spy(beatsync.sync_to_downbeats)
    monkeypatch.setattr(beatsync, "sync_to_downbeats", sync)
    request = RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord", seed=1,
                                       return_instrumental=True, return_stems=True, normalization_strategy="peak")
    result = remixer.remix(request, tmp_path)
    # One sync for all: the instrumental (1 channel) with drums and bass stacked under it, its shifts for all.
    ((stacked, _, generated_downbeats, target_downbeats), kwargs), = sync.calls
    assert stacked.shape[0] == 3 and kwargs["search_channels"] == 1
    assert list(generated_downbeats) == GENERATED_DOWNBEATS and list(target_downbeats) == SONG_DOWNBEATS
    assert len(separate.calls) == 2  # the song once, the new music once: the stems come from that one
    assert list(result.stems) == ["drums", "bass", "other", "vocals"]
    read = {name: sf.read(path, dtype="float32", always_2d=True)[0].T for name, path in result.stems.items()}
    instrumental = sf.read(result.instrumental, dtype="float32", always_2d=True)[0].T
    assert all(part.shape == instrumental.shape for part in read.values())
    np.testing.assert_allclose(read["drums"] + read["bass"] + read["other"], instrumental, atol=2e-4)
    # The parts were synced with the instrumental's own window shifts: re-deriving "other" from a
    # separately synced drums/bass would not add up; and the instrumental is the one without stems.
    monkeypatch.setattr(remixer.analyzer, "analyze", Spy(remixer.analyzer.analyze.real, _known_rhythm()))
    plain = remixer.remix(RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord", seed=1,
                                                   return_instrumental=True, normalization_strategy="peak"),
                          tmp_path / "plain")
    np.testing.assert_array_equal(sf.read(plain.instrumental, dtype="float32")[0],
                                  sf.read(result.instrumental, dtype="float32")[0])
    assert np.abs(read["vocals"]).max() > 0


# --- the wires of "tests that catch II" ------------------------------------------------------------------


def test_wiring_the_text_encoder_gets_the_prompt_with_the_songs_bpm(remixer, song, tmp_path, monkeypatch):
    """Fixed: the rhythm stage (120 bpm). The text T5 encodes is the prompt and the song's tempo, as the
    chord models were trained; and it is what the tokenizer turns into the encoder's tokens."""
    monkeypatch.setattr(remixer.analyzer, "analyze", Spy(remixer.analyzer.analyze, _known_rhythm()))
    encode = Spy(generation.encode_text)
    monkeypatch.setattr(generation, "encode_text", encode)
    model = remixer.load_version("chord")
    tokenize = Spy(model.tokenizer)
    monkeypatch.setattr(model, "tokenizer", tokenize)
    remixer.remix(RemixRequest.from_inputs(prompt="bossa nova", music_input=song, model_version="chord", seed=1),
                  tmp_path)
    ((_, text), _), = encode.calls
    assert text == "bossa nova, bpm : 120"
    assert [args[0] for args, _ in tokenize.calls] in (["bossa nova, bpm : 120"], [["bossa nova, bpm : 120"]])


def _marked_song(path, seconds: float = SECONDS):
    """A song whose every sample says where it is: a rising chirp (stereo), so a cut shows its place."""
    t = np.arange(int(seconds * SR)) / SR
    chirp = 0.4 * np.sin(2 * np.pi * (100 * t + 40 * t ** 2))
    sf.write(path, np.stack([chirp, 0.5 * chirp]).T.astype(np.float32), SR, subtype="FLOAT")
    return path


def test_wiring_a_section_is_cut_where_asked_and_reported_on_the_songs_timeline(remixer, tmp_path, monkeypatch):
    """Fixed: the rhythm stage (downbeats on the part's own timeline) and the chord recognizer (chords on
    it too). The part from 1.5 s to 7.0 s is what is separated; every time reported is on the song's
    timeline; the remix is the part's length."""
    song = _marked_song(tmp_path / "song.wav")
    part_downbeats = [0.5, 2.5, 4.5]
    monkeypatch.setattr(remixer.analyzer, "analyze", Spy(remixer.analyzer.analyze, _known_rhythm(
        song_downbeats=part_downbeats, generated_downbeats=part_downbeats)))
    part_chords = [ChordSegment(0.0, 2.5, "A:min"), ChordSegment(2.5, 5.5, "E:7")]
    recognizer = remixer.recognizers[True]
    monkeypatch.setattr(recognizer, "recognize", Spy(recognizer.recognize, lambda *_a, **_k: list(part_chords)))
    separate = Spy(remixer.separator.separate)
    monkeypatch.setattr(remixer.separator, "separate", separate)
    result = remixer.remix(RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord", seed=1,
                                                    start_time=1.5, end_time=7.0, return_analysis=True), tmp_path)
    (cut, rate), _ = separate.calls[0]
    whole, _ = sf.read(song, dtype="float32", always_2d=True)
    assert rate == SR and cut.shape == (2, int(5.5 * SR))
    np.testing.assert_array_equal(cut, whole.T[:, int(1.5 * SR):int(7.0 * SR)])
    report = json.loads(result.analysis_json.read_text())
    assert report["section"] == {"start": 1.5, "end": 7.0} and report["duration"] == pytest.approx(5.5)
    assert report["downbeats"] == pytest.approx([2.0, 4.0, 6.0])
    assert [(c["start"], c["end"], c["label"]) for c in report["chords"]] == [(1.5, 4.0, "A:min"), (4.0, 7.0, "E:7")]
    assert sf.info(result.remix).frames == int(5.5 * SR)  # the part, at the song's rate


PART_DOWNBEATS = [0.5, 2.5, 4.5]  # on the part's own timeline (1.5 s to 7.0 s of the song)
PART_SECTIONS = [rhythm.Section(0.0, 2.5, "verse"), rhythm.Section(2.5, 5.5, "chorus")]


@pytest.mark.parametrize("tempo", [None, 108.0])
def test_wiring_every_output_of_a_section_is_on_the_remixs_timeline(remixer, tmp_path, monkeypatch, tempo):
    """Fixed: the rhythm stage (the part's downbeats, beats and sections on its own timeline) and the chord
    recognizer. For the part from 1.5 s to 7.0 s (and with tempo, the whole retimed by 120/108):
    analysis.json on the song's timeline; the MIDI file's beats, bars, chords and markers on the remix's
    (analysis.json's less the part's start, within 1 ms); stems, instrumental and takes as long as the remix."""
    song = _marked_song(tmp_path / "song.wav")

    calls = []

    def fixed(_stems):  # the stage's result fixed, its model not run: the song's first, then each take's
        calls.append(len(calls) + 1)
        beats = [t + k * 0.5 for t in PART_DOWNBEATS for k in range(4) if t + k * 0.5 < 5.5]
        return rhythm.Rhythm(bpm=120.0, beats=beats, downbeats=list(PART_DOWNBEATS),
                             sections=list(PART_SECTIONS) if len(calls) == 1 else [])

    monkeypatch.setattr(remixer.analyzer, "analyze", fixed)
    part_chords = [ChordSegment(0.0, 2.5, "A:min"), ChordSegment(2.5, 5.5, "E:7")]
    recognizer = remixer.recognizers[True]
    monkeypatch.setattr(recognizer, "recognize", Spy(recognizer.recognize, lambda *_a, **_k: list(part_chords)))
    result = remixer.remix(RemixRequest.from_inputs(
        prompt="x", music_input=song, model_version="chord", seed=1, start_time=1.5, end_time=7.0, tempo=tempo,
        takes=2, return_takes=True, return_stems=True, return_instrumental=True, return_analysis=True,
        return_midi=True), tmp_path / "out")
    factor = 1.0 if tempo is None else 120.0 / tempo
    report = json.loads(result.analysis_json.read_text())
    start = 1.5 * factor  # the part's start on the (retimed) song's timeline
    assert calls == [1, 2, 3]  # the song, then each take (beat-sync)
    # analysis.json: the song's timeline (retimed with tempo), as docs/interfaces.md says.
    near = dict(abs=1e-4)  # analysis.json rounds to 0.1 ms
    assert report["section"] == {"start": pytest.approx(start, **near), "end": pytest.approx(7.0 * factor, **near)}
    assert report["downbeats"] == pytest.approx([(1.5 + t) * factor for t in PART_DOWNBEATS], **near)
    assert [(c["start"], c["label"]) for c in report["chords"]] == [
        (pytest.approx(1.5 * factor, **near), "A:min"), (pytest.approx(4.0 * factor, **near), "E:7")]
    assert [(s["start"], s["label"]) for s in report["sections"]] == [
        (pytest.approx(1.5 * factor, **near), "verse"), (pytest.approx(4.0 * factor, **near), "chorus")]
    # The MIDI file, read back by pretty_midi (and its markers by mido): the remix's timeline, time 0 = the
    # remix's first sample.
    import pretty_midi

    from tests.test_midi import assert_beats_and_bars_on_the_grid, midi_markers

    song_midi = pretty_midi.PrettyMIDI(str(result.midi))
    assert_beats_and_bars_on_the_grid(song_midi, np.array(report["beats"]) - start,
                                      np.array(report["downbeats"]) - start)
    onsets = sorted({round(n.start, 3) for n in song_midi.instruments[0].notes})
    np.testing.assert_allclose(onsets, [c["start"] - start for c in report["chords"]], atol=1e-3)
    markers = midi_markers(result.midi)
    assert [label for _, label in markers] == ["verse", "chorus"]
    np.testing.assert_allclose([t for t, _ in markers], [s["start"] - start for s in report["sections"]],
                               atol=1e-3)
    # Every audio output is the remix's length: the part, retimed.
    frames = sf.info(result.remix).frames
    assert abs(frames - 5.5 * factor * SR) <= SR * 0.01
    others = [result.instrumental, *result.stems.values(), *result.take_outputs.values()]
    assert len(result.stems) >= 4 and list(result.take_outputs) == ["take2"]
    assert [sf.info(path).frames for path in others] == [frames] * len(others)
    # The mix envelope's bars are reported on the song's timeline, like analysis.json's downbeats.
    envelope = report["mix"]["envelope"]
    bars = report["downbeats"]
    assert envelope["bar_starts"][-len(bars):] == pytest.approx(bars, abs=1e-3)
    assert min(envelope["bar_starts"]) >= start - 1e-3


def test_wiring_a_short_progression_repeats_to_the_songs_end(remixer, song, tmp_path, monkeypatch):
    """Fixed: the rhythm stage (4 bars). Two chords on four bars: C G C G, not C G G G."""
    monkeypatch.setattr(remixer.analyzer, "analyze", Spy(remixer.analyzer.analyze, _known_rhythm()))
    generate = Spy(generation.generate_takes)
    monkeypatch.setattr(generation, "generate_takes", generate)
    result = remixer.remix(RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord", seed=1,
                                                    chords="C G", return_analysis=True), tmp_path)
    assert [c.label for c in result.analysis.chords] == ["C", "G", "C", "G"]
    chroma = generate.calls[0][0][2]
    bars = [0.0, *SONG_DOWNBEATS[1:], SECONDS]
    for index, (start, end) in enumerate(zip(bars[:-1], bars[1:])):
        frame = int(((start + end) / 2) / chords.FRAME_SECONDS)
        assert chroma[frame].tolist() == chords.chord_to_pitch_classes("CG"[index % 2]), index


def test_wiring_the_normalization_strategy_reaches_the_mix_and_sets_the_level(remixer, song, tmp_path, monkeypatch):
    """Fixed: nothing; a spy on the mix. The level the user asked for (rms: -18 dBFS, not the default
    loudness) is the remix's level."""
    mixed = Spy(mix.mix)
    monkeypatch.setattr(mix, "mix", mixed)
    result = remixer.remix(RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord", seed=1,
                                                    normalization_strategy="rms"), tmp_path)
    (args, _), = mixed.calls
    assert args[3] == "rms"
    remix, _ = sf.read(result.remix, dtype="float32", always_2d=True)
    assert np.sqrt(np.mean(remix ** 2)) == pytest.approx(10 ** (-18 / 20), rel=0.02)


def test_wiring_drums_and_bass_are_the_new_musics_stems_carried_through_beat_sync(
        remixer, song, tmp_path, monkeypatch):
    """Fixed: the rhythm stage, the generated music (clicks on its downbeats) and the separation of the
    generated music (drums: clicks on its downbeats; bass: clicks a quarter second later; no other, no
    vocals). The stems returned are those stems, moved by the instrumental's time map: the drums' clicks
    land on the song's downbeats, the bass's a mapped quarter second after them."""
    monkeypatch.setattr(remixer.analyzer, "analyze", Spy(remixer.analyzer.analyze, _known_rhythm()))

    def clicks_instead(_call, made, *args, **kwargs):
        return [_with_clicks(generated) for generated in made]

    monkeypatch.setattr(generation, "generate_takes", Spy(generation.generate_takes, clicks_instead))
    offset = 0.25

    def known_stems(call, stems, samples, rate):
        if call == 1:
            return stems
        length = int(round(samples.shape[1] * SR / rate))
        drums = _clicks(GENERATED_DOWNBEATS, length, SR, 2)
        bass = _clicks([t + offset for t in GENERATED_DOWNBEATS], length, SR, 2)
        silence = np.zeros_like(drums)
        return separation.Stems({"drums": drums, "bass": bass, "other": silence, "vocals": silence})

    monkeypatch.setattr(remixer.separator, "separate", Spy(remixer.separator.separate, known_stems))
    result = remixer.remix(RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord", seed=1,
                                                    return_stems=True, normalization_strategy="peak"), tmp_path)
    drums, rate = sf.read(result.stems["drums"], dtype="float32", always_2d=True)
    bass, _ = sf.read(result.stems["bass"], dtype="float32", always_2d=True)
    drum_clicks = _click_times(drums.T, rate)
    assert len(drum_clicks) == len(SONG_DOWNBEATS)
    assert np.max(np.abs(np.array(drum_clicks) - SONG_DOWNBEATS)) < 0.003, drum_clicks
    # Inside a bar the map is linear: a quarter second of a 1.9 s generated bar is 0.263 s of a 2.0 s one
    # (after the last downbeat the tail follows its own ratio: not checked).
    expected_bass = [t + offset * 2.0 / 1.9 for t in SONG_DOWNBEATS[:-1]]
    bass_clicks = _click_times(bass.T, rate)
    assert len(bass_clicks) == len(SONG_DOWNBEATS)
    assert np.max(np.abs(np.array(bass_clicks[:-1]) - expected_bass)) < 0.003, bass_clicks


# --- tests that catch III: what the mix receives, and what the fidelity numbers mean -------------------------

MIX_SECONDS = 4.0


def test_wiring_the_remix_is_the_new_band_plus_the_songs_own_vocals(remixer, tmp_path, monkeypatch):
    """Fixed: the song's separation (known vocals: a 660 Hz tone, nothing else) and the generated music (a
    220 Hz band). Real: everything else (no beat is found, so nothing is stretched). With mix_balance=published
    the remix must be the published predictor's mix of exactly those two: the band at half scale, the vocals at
    a quarter, summed, peak-scaled, then -1 dBFS peak (computed here from the rule, not by the product's code).
    (The song's own balance, the default, is tested with known parts in tests/test_balance.py.)"""
    vocals = np.repeat(tone(660.0, MIX_SECONDS, SR, channels=1), 2, axis=0) * np.float32(0.6)  # both sides
    band = tone(220.0, MIX_SECONDS, 32000, channels=1).astype(np.float32) * np.float32(0.8)
    real_separate = remixer.separator.separate
    separated = []

    def separate(samples, rate, *args, **kwargs):
        separated.append(rate)
        if len(separated) > 1:  # the new music: separated for real
            return real_separate(samples, rate, *args, **kwargs)
        silent = np.zeros_like(vocals)
        return separation.Stems({"drums": silent, "bass": silent, "other": silent, "vocals": vocals})

    monkeypatch.setattr(remixer.separator, "separate", separate)
    monkeypatch.setattr(generation, "generate_takes", lambda *a, **k: [generation.Generated(
        torch.zeros((4, int(MIX_SECONDS * 50)), dtype=torch.long), band, 32000, k["seed"])])
    song = write_song(tmp_path / "song.wav", MIX_SECONDS)
    request = RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord", seed=3,
                                       normalization_strategy="peak", mix_balance="published")
    result = remixer.remix(request, tmp_path / "out")
    remix, rate = sf.read(result.remix, dtype="float64", always_2d=True)
    assert rate == SR and remix.shape == (int(MIX_SECONDS * SR), 1)  # the song's rate

    import soxr
    # The band made at 32 kHz, resampled once to the song's rate; the vocals at the song's rate throughout.
    played = soxr.resample(band.T.astype(np.float64), 32000, SR).T
    sung = vocals.astype(np.float64).mean(axis=0, keepdims=True)
    summed = 0.5 * played / np.abs(played).max() + 0.25 * sung / np.abs(sung).max()
    expected = summed / np.abs(summed).max() * 10 ** (-1 / 20)
    # Tolerance: 16-bit output (half a step, 1.5e-5) and the resampler's edges; a wrong second signal (the
    # band twice, no vocals) or a wrong level is off by 0.1 or more.
    difference = np.abs(remix.T - expected)
    assert difference[:, 1000:-1000].max() < 2e-3, difference.max()
    assert dominant_frequency(remix[:, 0], SR) == pytest.approx(220, abs=3)  # the band leads, as mixed


# The song's chords (sevenths) and the new music's (their triads, 0.5 s late on its own timeline: its
# downbeats are the song's + 0.5 s, so beat-sync's time map moves it back by 0.5 s).
FIDELITY_SONG_DOWNBEATS = [0.5, 2.5, 4.5, 6.5]
FIDELITY_NEW_DOWNBEATS = [1.0, 3.0, 5.0, 7.0]
FIDELITY_SONG_CHORDS = [ChordSegment(0.0, 2.5, "C:maj7"), ChordSegment(2.5, 4.5, "A:min7"),
                        ChordSegment(4.5, 6.5, "F:maj7"), ChordSegment(6.5, 8.0, "G:7")]
FIDELITY_NEW_CHORDS = [ChordSegment(0.0, 3.0, "C"), ChordSegment(3.0, 5.0, "A:min"),
                       ChordSegment(5.0, 7.0, "F"), ChordSegment(7.0, 8.0, "G")]


def test_wiring_fidelity_compares_chords_through_the_time_map_and_names_each_number(
        remixer, song, tmp_path, monkeypatch):
    """Fixed: the rhythm stage (the song's downbeats, then the new music's, 0.5 s later) and the chord
    recognizer (the song's sevenths, then the new music's triads, 0.5 s late). Real: everything else.

    Through the time map the triads line up with the song's chords except the last 0.5 s (nothing is mapped
    there): majmin 7.5 / 8 = 0.9375. Without the map they are 0.5 s late at three changes: 6.5 / 8. Tetrads
    tell triads from sevenths: 0.0 either way, so majmin and tetrads cannot pass for each other."""
    monkeypatch.setattr(remixer.analyzer, "analyze", Spy(remixer.analyzer.analyze, _known_rhythm(
        FIDELITY_SONG_DOWNBEATS, FIDELITY_NEW_DOWNBEATS)))
    answers = iter([FIDELITY_SONG_CHORDS, FIDELITY_NEW_CHORDS])
    monkeypatch.setattr(remixer.recognizers[True], "recognize", lambda *_: list(next(answers)))
    request = RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord", seed=1,
                                       return_analysis=True)
    result = remixer.remix(request, tmp_path)
    report = json.loads(result.analysis_json.read_text())["fidelity"]
    assert report["chord_majmin"] == pytest.approx(7.5 / 8) and report["chord_tetrads"] == 0.0
    assert result.fidelity.chord_majmin == pytest.approx(0.9375) and result.fidelity.chord_tetrads == 0.0
    unmapped = fidelity.chord_scores(FIDELITY_SONG_CHORDS, FIDELITY_NEW_CHORDS, SECONDS)
    assert unmapped == (pytest.approx(6.5 / 8), 0.0)  # what a take compared on its own timeline would get
