"""Every stage on CUDA against the same stage on the CPU, with the tiny weights (marked cuda: skipped
without a GPU; `benchmarks/gpu_check.py` runs them on the GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from remixer import chords, decoding, generation, mbd, rhythm, separation
from remixer.pipeline import Remixer
from remixer.request import RemixRequest
from remixer.testing.musicgen import load_tiny
from remixer.testing.rhythm import folds_in
from remixer.testing.separation import checkpoint_in
from tests.conftest import tone, write_song

pytestmark = pytest.mark.cuda
SR = 44100


@pytest.fixture(scope="module")
def music():
    return tone(220, 4.0, SR) + tone(277, 4.0, SR, amplitude=0.2)


def test_separation_on_cuda_matches_the_cpu(tiny_weights, music):
    cpu = separation.load_separator(checkpoint_in(tiny_weights), "cpu").separate(music, SR)
    gpu = separation.load_separator(checkpoint_in(tiny_weights), "cuda").separate(music, SR)
    for name in separation.STEM_NAMES:
        np.testing.assert_allclose(gpu[name], cpu[name], atol=1e-3, rtol=1e-3, err_msg=name)


def test_rhythm_and_chords_on_cuda_match_the_cpu(tiny_weights, music):
    stems = separation.load_separator(checkpoint_in(tiny_weights), "cpu").separate(music, SR)
    assert rhythm.load_analyzer(folds_in(tiny_weights), "cuda").analyze(stems) == rhythm.load_analyzer(
        folds_in(tiny_weights), "cpu").analyze(stems)
    cpu = chords.read_recognizer(tiny_weights / "btc" / "btc_model_large_voca.pt", "cpu")
    gpu = chords.read_recognizer(tiny_weights / "btc" / "btc_model_large_voca.pt", "cuda")
    features = np.random.default_rng(0).standard_normal((216, 144)).astype(np.float32) - 6
    np.testing.assert_allclose(gpu.logits(features), cpu.logits(features), atol=1e-3, rtol=1e-3)


def test_generation_float32_on_cuda_gives_the_cpus_greedy_tokens(tiny_weights, monkeypatch):
    chroma = chords.segments_to_chroma([], 3.0)
    chroma[:, [0, 4, 7]] = 1
    path = tiny_weights / "musicgen" / "musicgen-stereo-chord.th"
    greedy = generation.Sampling(top_k=1)
    cpu = generation.generate(load_tiny(path, "cpu", tiny_weights), "x", chroma, 2.0, greedy, seed=1)
    monkeypatch.setenv("REMIXER_DECODER_DTYPE", "float32")
    gpu = generation.generate(load_tiny(path, "cuda", tiny_weights), "x", chroma, 2.0, greedy, seed=1)
    assert torch.equal(gpu.tokens, cpu.tokens)
    np.testing.assert_allclose(gpu.audio, cpu.audio, atol=1e-3)


def test_generation_float16_logits_are_close_to_float32(tiny_weights, monkeypatch):
    """The decoder in float16 (the default on CUDA): logits within 0.05 of float32 for a prefix."""
    path = tiny_weights / "musicgen" / "musicgen-chord.th"
    window = np.zeros((235, 12), np.float32)
    window[:, [0, 4, 7]] = 1
    results = {}
    for dtype in ("float32", "float16"):
        monkeypatch.setenv("REMIXER_DECODER_DTYPE", dtype)
        model = load_tiny(path, "cuda", tiny_weights)
        decoder = model.decoder_for()
        prefix = generation.condition_prefix(model, generation.encode_text(model, "jazz"), window, guided=False)
        cache = decoding.KVCache(decoder, 1, prefix.shape[1] + 1)
        with torch.inference_mode():
            hidden = prefix.to(decoder.dtype) + decoder.positional(cache.length)[:prefix.shape[1]]
            results[dtype] = decoder.logits(decoder.forward(hidden, 0, cache, causal=True)[:, -1])
    torch.testing.assert_close(results["float16"], results["float32"], atol=0.05, rtol=0.05)


def test_mbd_on_cuda_matches_the_cpu(tiny_weights):
    """Two chain steps (999 -> 0) draw no noise: the same initial noise gives the same band output."""
    path = tiny_weights / "mbd" / "mbd_musicgen_32khz.th"
    latent = torch.randn(1, 128, 10, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(1, 1, 6400, generator=torch.Generator().manual_seed(1))
    cpu = mbd.load_mbd(path, "cpu").bands[0].sample(latent, noise, [999, 0])
    gpu = mbd.load_mbd(path, "cuda").bands[0].sample(latent.cuda(), noise.cuda(), [999, 0])
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=1e-3)


def test_whole_remix_on_cuda_and_out_of_memory_then_recovery(tiny_weights, tmp_path, monkeypatch):
    monkeypatch.setenv(decoding.GRAPHS_ENV, "strict")  # the remix decodes with the graph, or fails here
    remixer = Remixer(tiny_weights, "cuda", offline=True)
    song = write_song(tmp_path / "song.wav", 3.0)
    request = RemixRequest.from_inputs(prompt="funk", music_input=song, seed=2)
    result = remixer.remix(request, tmp_path / "ok")
    samples, rate = sf.read(result.remix, always_2d=True)
    assert rate == 32000 and samples.shape == (3 * 32000, 2) and np.isfinite(samples).all()
    torch.cuda.set_per_process_memory_fraction(0.0001)
    try:
        long_song = write_song(tmp_path / "long.wav", 60.0)
        with pytest.raises(Exception, match="ran out of memory"):
            remixer.remix(RemixRequest.from_inputs(prompt="funk", music_input=long_song, seed=2), tmp_path / "oom")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    again = remixer.remix(request, tmp_path / "again")
    assert again.remix.read_bytes() == result.remix.read_bytes()
