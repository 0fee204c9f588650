"""The whole remix in-process with the tiny weights: real code path, every stage real."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import soundfile as sf

from remixer.audio import AudioError
from remixer.pipeline import Remixer
from remixer.request import RemixRequest, RequestError
from tests.conftest import write_song

SR = 44100


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    return write_song(tmp_path_factory.mktemp("song") / "song.flac", 5.0)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    return work


def test_remix_end_to_end(remixer, song, tmp_path, private_tmp):
    runs = remixer.separator.runs
    request = RemixRequest.from_inputs(prompt="bossa nova", music_input=song, return_instrumental=True, seed=11)
    result = remixer.remix(request, tmp_path / "out")
    assert [p.name for p in result.outputs] == ["remix.wav", "instrumental.wav"]
    for path in result.outputs:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.frames) == (44100, 2, 5 * 44100)  # the song's rate
    remix, _ = sf.read(result.remix)
    assert np.abs(remix).max() <= 1.0 and np.abs(remix).max() > 0
    assert result.seed == 11 and result.sample_rate == 44100
    assert list(result.timings) == ["decode", "separate", "rhythm", "chords", "balance", "chroma", "load model",
                                    "generate", "beat-sync", "fidelity", "mix", "encode"]
    assert result.analysis.duration == pytest.approx(5.0)
    assert result.analysis.chords and result.analysis.chords[-1].end == pytest.approx(5.0)
    # The song is separated once, the new instrumental once (beat-sync and fidelity share its stems).
    assert remixer.separator.runs - runs == 2
    assert not any(private_tmp.iterdir())  # the request's work folder is gone


def test_same_seed_same_bytes(remixer, song, tmp_path):
    request = RemixRequest.from_inputs(prompt="jazz", music_input=song, model_version="chord", seed=0)
    first = remixer.remix(request, tmp_path / "a").remix.read_bytes()
    second = remixer.remix(request, tmp_path / "b").remix.read_bytes()
    assert first == second


def test_mono_model_mp3(remixer, song, tmp_path):
    request = RemixRequest.from_inputs(prompt="rock", music_input=song, model_version="chord",
                                       output_format="mp3", normalization_strategy="peak", seed=2)
    result = remixer.remix(request, tmp_path / "out")
    from remixer.audio import load_audio

    samples, sr = load_audio(result.remix)
    assert sr == 44100 and samples.shape[0] == 1 and abs(samples.shape[1] - 5 * 44100) <= 1152  # an mp3 frame


def test_failure_leaves_nothing_behind_and_the_next_request_works(remixer, song, tmp_path, private_tmp):
    bad = tmp_path / "upload"
    bad.write_text("not audio")
    with pytest.raises(AudioError, match="not a readable audio file"):
        remixer.remix(RemixRequest.from_inputs(prompt="x", music_input=bad), tmp_path / "out")
    assert not any(private_tmp.iterdir())
    ok = remixer.remix(RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord", seed=1),
                       tmp_path / "out")
    assert ok.remix.exists()


def test_multi_band_diffusion_decodes_mono_and_refuses_stereo(remixer, song, tmp_path):
    with pytest.raises(RequestError, match="mono models"):
        remixer.remix(RemixRequest(prompt="x", music_input=song, multi_band_diffusion=True), tmp_path)
    request = RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord",
                                       multi_band_diffusion=True, seed=3)
    result = remixer.remix(request, tmp_path / "mbd")
    assert "MBD" in result.timings
    info = sf.info(result.remix)
    assert (info.samplerate, info.channels, info.frames) == (44100, 1, 5 * 44100)
    plain = remixer.remix(RemixRequest.from_inputs(prompt="x", music_input=song, model_version="chord", seed=3),
                          tmp_path / "plain")
    assert result.remix.read_bytes() != plain.remix.read_bytes()  # a different decoder ran
    again = remixer.remix(request, tmp_path / "mbd2")
    assert again.remix.read_bytes() == result.remix.read_bytes()  # deterministic for a seed


def test_request_validation_lists_every_problem(song):
    with pytest.raises(RequestError) as caught:
        RemixRequest.from_inputs(prompt=" ", music_input=song, model_version="big", chroma_coefficient=3,
                                 top_p=1.5, temperature=0, seed=-5, beat_sync_threshold=0)
    message = str(caught.value)
    for expected in ("model_version must be one of", "chroma_coefficient must be <= 2.0", "top_p must be <= 1.0",
                     "temperature must be > 0", "seed must be >= 0", "beat_sync_threshold must be > 0",
                     "prompt is empty"):
        assert expected in message
    with pytest.raises(RequestError, match="prompt is required"):
        RemixRequest.from_inputs(music_input=song)
    with pytest.raises(RequestError, match="top_k: 'many' is not a int"):
        RemixRequest.from_inputs(prompt="x", music_input=song, top_k="many")
    with pytest.raises(RequestError, match="unknown input"):
        RemixRequest.from_inputs(prompt="x", music_input=song, speed=3)


def test_unset_values_and_loose_types(song):
    request = RemixRequest.from_inputs(prompt="x", music_input=str(song), seed=-1, beat_sync_threshold=-1,
                                       return_instrumental="true", top_k="10")
    assert request.seed is None and request.beat_sync_threshold is None
    assert request.return_instrumental is True and request.top_k == 10
    assert RemixRequest.from_inputs(prompt="x", music_input=song, seed=0).seed == 0


def test_setup_is_timed_per_component_in_one_table(tiny_weights, caplog):
    with caplog.at_level("INFO", logger="remixer"):
        fresh = Remixer(tiny_weights, "cpu", offline=True)
        fresh.load_version("chord")
        fresh.load_version("chord")  # cached: not loaded or timed again
        fresh.log_setup()
    assert list(fresh.setup_timings) == ["download", "demucs", "All-In-One", "madmom", "BTC", "T5 + EnCodec",
                                          "MusicGen-Chord chord"]
    table = [r.getMessage() for r in caplog.records if r.getMessage().startswith("setup:")]
    assert len(table) == 1 and "MusicGen-Chord chord" in table[0] and "total" in table[0]
