"""MusicGen-Chord: parity of the converted model with audiocraft, caching, long-form generation."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from btc import ChordSegment
from remixer import chords, conversion, decoding, generation, models, musicgen
from remixer.generation import GenerationError, Sampling
from remixer.testing.musicgen import encoders_in, load_tiny

FIXTURES = Path(__file__).parent / "fixtures" / "musicgen"


def _reference_model(name: str, tmp_path: Path, weights_dir: Path):
    th = tmp_path / f"{name}.th"
    shutil.copy(FIXTURES / f"{name}.th", th)
    reference = torch.load(FIXTURES / f"{name}.reference.pt", weights_only=True)
    return load_tiny(th, "cpu", weights_dir), reference


def _fixed_text(reference) -> generation.EncodedText:
    """The reference's fixed text embedding in place of T5's output (the fixtures bypass T5, a stock model)."""
    embedding = reference["text_embedding"]
    ones = torch.ones(embedding.shape[:2], dtype=torch.long)
    return generation.EncodedText(ones, embedding, ones)


@pytest.fixture
def parity(monkeypatch, tmp_path, tiny_weights):
    """(model, reference) with the prompt's T5 output replaced by the reference's text embedding."""

    def load(name: str):
        model, reference = _reference_model(name, tmp_path, tiny_weights)
        monkeypatch.setattr(generation, "encode_text", lambda _model, _text: _fixed_text(reference))
        return model, reference

    return load


GREEDY = Sampling(top_k=1)  # one candidate per step: argmax, as the reference's greedy decoding


@pytest.mark.parametrize("name", ["musicgen-tiny-chord", "musicgen-tiny-stereo-chord"])
def test_converted_model_and_our_condition_prefix_reproduce_reference_logits(name, parity):
    model, reference = parity(name)
    tokens = reference["tokens"]  # (1, K, S)
    codebooks, steps = tokens.shape[1:]
    prefix = generation.condition_prefix(model, _fixed_text(reference), reference["chroma"][0].numpy(), guided=False)
    with torch.inference_mode():
        logits = model(input_ids=torch.ones((1, 1), dtype=torch.long), encoder_hidden_states=prefix,
                       decoder_input_ids=tokens.reshape(codebooks, steps)).logits
    logits = logits[:, -steps:]  # transformers also scores the prepended condition positions
    expected = reference["logits"][0]  # (K, S, card)
    assert logits.shape == expected.shape
    # float32 on both sides, same operations in a different order.
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["musicgen-tiny-chord", "musicgen-tiny-stereo-chord"])
@pytest.mark.parametrize("guidance,key", [(1.0, "greedy_no_cfg"), (3.0, "greedy_cfg3")])
def test_one_window_greedy_tokens_match_the_reference(name, guidance, key, parity):
    model, reference = parity(name)
    expected = reference[key][0]  # (K, frames)
    seconds = expected.shape[1] / generation.FRAME_RATE
    # The reference's 235-frame chroma is the song's whole chroma: window 0 is exactly it.
    result = generation.generate(model, "a song", reference["chroma"][0].numpy(), seconds,
                                 Sampling(top_k=1, classifier_free_guidance=guidance), seed=0)
    assert torch.equal(result.tokens, expected)


@pytest.mark.parametrize("name", ["musicgen-tiny-chord", "musicgen-tiny-stereo-chord"])
@pytest.mark.parametrize("song", ["long", "short"])
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_whole_song_greedy_tokens_match_the_chord_conditioner_reference(name, song, guidance, parity):
    """Long: two windows, the second prompted with 12 s and conditioned past the song's end
    (periodic). Short: 4 s, its chroma tiled to the window. The reference's null row is zeros."""
    model, reference = parity(name)
    case = reference["songs"][song]
    expected = case[f"greedy_cfg{int(guidance) if guidance > 1 else 1}"][0]
    result = generation.generate(model, "a song", case["chroma"].numpy(), case["seconds"],
                                 Sampling(top_k=1, classifier_free_guidance=guidance), seed=0)
    assert result.tokens.shape == expected.shape
    assert torch.equal(result.tokens, expected)


def test_null_condition_row_is_exact_zeros_and_the_condition_row_is_unchanged(mono):
    text = generation.encode_text(mono, "bossa nova")
    window = chords.window_chroma(_chroma(30), [0.0])[0]
    guided = generation.condition_prefix(mono, text, window, guided=True)
    alone = generation.condition_prefix(mono, text, window, guided=False)
    assert guided.shape == (2, 235 + text.ids.shape[1], mono.decoder.config.hidden_size)
    assert torch.count_nonzero(guided[1]) == 0  # the chord conditioner's null: chroma and text both zero
    assert torch.equal(guided[:1], alone)
    with torch.inference_mode():
        projected = mono.audio_enc_to_dec_proj(torch.from_numpy(window)[None])
    torch.testing.assert_close(alone[:, :235], projected, atol=0, rtol=0)
    # The melody model's null (one-hot bin 0, projected) is not what the chord models were trained with.
    with torch.inference_mode():
        melody_null = mono.audio_enc_to_dec_proj.weight[:, 0] + mono.audio_enc_to_dec_proj.bias
    assert torch.count_nonzero(melody_null) > 0


@pytest.fixture
def windows_seen(monkeypatch):
    """Records what every window's decode receives (prefix, plan, sampling settings)."""
    seen = []
    original = decoding.WindowDecoder.decode

    def spy(self, prefix, plan, settings, generator, progress=None, steps=None):
        seen.append({"prefix": prefix, "plan": plan, "settings": settings, "steps": steps})
        return original(self, prefix, plan, settings, generator, progress, steps)

    monkeypatch.setattr(decoding.WindowDecoder, "decode", spy)
    return seen


def test_the_guided_generation_uses_the_zero_null_row(mono, windows_seen):
    generation.generate(mono, "funk", _chroma(2), 1.0, Sampling(classifier_free_guidance=3.0), seed=3)
    generation.generate(mono, "funk", _chroma(2), 1.0, Sampling(classifier_free_guidance=1.0), seed=3)
    guided, plain = windows_seen
    assert guided["prefix"].shape[0] == 2 and torch.count_nonzero(guided["prefix"][1]) == 0
    assert guided["settings"].guided and guided["settings"].classifier_free_guidance == 3.0
    assert plain["prefix"].shape[0] == 1 and not plain["settings"].guided
    assert torch.equal(guided["prefix"][:1], plain["prefix"])


def test_guidance_zero_is_the_unconditional_model_as_audiocraft_mixes_it(mono):
    """audiocraft's lm.py: null + (condition - null) * cfg_coef. At 0 the null row alone decides, so neither the
    prompt's words nor the chords change a token; at 3 they do. (The null row keeps one zero position per text
    token, as audiocraft's does, so the two prompts have the same token count.)"""
    prompts = ("funk", "soul")
    lengths = {p: int(generation.encode_text(mono, p).mask.sum()) for p in prompts}
    assert len(set(lengths.values())) == 1, lengths
    unconditional = Sampling(top_k=250, classifier_free_guidance=0.0)  # sampled: the same seed draws alike only from equal logits
    assert unconditional.guided  # the null row must be decoded: it is the one that counts
    a = generation.generate(mono, prompts[0], _chroma(2), 1.0, unconditional, seed=0)
    b = generation.generate(mono, prompts[1], np.roll(_chroma(2), 5, axis=1), 1.0, unconditional, seed=0)
    assert torch.equal(a.tokens, b.tokens)
    guided = Sampling(top_k=250, classifier_free_guidance=3.0)
    c = generation.generate(mono, prompts[0], _chroma(2), 1.0, guided, seed=0)
    d = generation.generate(mono, prompts[1], np.roll(_chroma(2), 5, axis=1), 1.0, guided, seed=0)
    assert not torch.equal(c.tokens, d.tokens)


def test_facts_of_every_version(tiny_weights):
    for version, channels, codebooks in (("chord", 1, 4), ("chord-large", 1, 4), ("stereo-chord", 2, 8),
                                         ("stereo-chord-large", 2, 8)):
        model = load_tiny(tiny_weights / "musicgen" / f"musicgen-{version}.th", "cpu", tiny_weights)
        facts = model.facts
        assert (facts.version, facts.channels, facts.codebooks, facts.max_delay) == (version, channels, codebooks, 3)


def test_conversion_is_cached_and_redone_when_the_source_changes(tmp_path, tiny_weights):
    th = tmp_path / "musicgen-chord.th"
    shutil.copy(tiny_weights / "musicgen" / "musicgen-chord.th", th)
    cache = conversion.convert_checkpoint(th)
    state = cache / "model.safetensors"
    first = state.stat().st_mtime_ns
    assert conversion.convert_checkpoint(th) == cache and state.stat().st_mtime_ns == first
    stat = th.stat()
    os.utime(th, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # the source changed: converted again
    state.unlink()  # so a re-conversion is visible without comparing timestamps
    conversion.convert_checkpoint(th)
    assert state.is_file()
    assert json.loads((cache / "source.json").read_text())["mtime_ns"] == stat.st_mtime_ns + 1_000_000
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_checkpoints_and_versions_are_explained(tmp_path, tiny_weights):
    junk = tmp_path / "musicgen-chord.th"
    junk.write_bytes(b"junk")
    with pytest.raises(GenerationError, match="not a readable MusicGen-Chord checkpoint"):
        load_tiny(junk, "cpu", tiny_weights)
    with pytest.raises(GenerationError, match="not found"):
        load_tiny(tmp_path / "none.th", "cpu", tiny_weights)
    with pytest.raises(GenerationError, match="stereo-chord, stereo-chord-large, chord, chord-large"):
        musicgen.component_for("chord-huge")


@pytest.fixture(scope="module")
def mono(tiny_weights):
    return load_tiny(tiny_weights / "musicgen" / "musicgen-chord.th", "cpu", tiny_weights)


@pytest.fixture(scope="module")
def stereo(tiny_weights):
    return load_tiny(tiny_weights / "musicgen" / "musicgen-stereo-chord.th", "cpu", tiny_weights)


def _chroma(seconds: float) -> np.ndarray:
    labels = ["C", "A:min", "F", "G"]
    segments = [ChordSegment(2 * i, 2 * (i + 1), labels[i % 4]) for i in range(int(seconds // 2) + 1)]
    return chords.segments_to_chroma(segments, seconds)


def test_same_seed_same_bytes_and_seed_zero_is_a_seed(mono):
    a = generation.generate(mono, "bossa nova", _chroma(2), 2.0, seed=0)
    b = generation.generate(mono, "bossa nova", _chroma(2), 2.0, seed=0)
    c = generation.generate(mono, "bossa nova", _chroma(2), 2.0, seed=1)
    assert a.seed == 0
    assert torch.equal(a.tokens, b.tokens) and a.audio.tobytes() == b.audio.tobytes()
    assert not torch.equal(a.tokens, c.tokens)


def test_output_shapes_mono_and_stereo(mono, stereo):
    for model, channels, codebooks in ((mono, 1, 4), (stereo, 2, 8)):
        result = generation.generate(model, "synthwave", _chroma(3), 2.5, seed=5, bpm=100)
        assert result.tokens.shape == (codebooks, 125)
        assert result.audio.shape == (channels, 80000) and result.audio.dtype == np.float32
        assert result.sample_rate == 32000 and np.all(np.isfinite(result.audio))
        assert int(result.tokens.min()) >= 0 and int(result.tokens.max()) < 2048


def test_random_seed_is_chosen_and_reported(mono, caplog):
    with caplog.at_level("INFO"):
        result = generation.generate(mono, "jazz", _chroma(1), 0.5, seed=None)
    assert f"seed {result.seed}" in caplog.text
    assert generation.generate(mono, "jazz", _chroma(1), 0.5, seed=-1).seed != -1


def test_prompt_rules(mono):
    assert generation.build_prompt("  bossa nova ", 119.6) == "bossa nova, bpm : 120"
    assert generation.build_prompt("bossa nova", None) == "bossa nova"


def test_long_songs_continue_window_by_window_on_their_own_chords(mono, windows_seen):
    song = _chroma(40)
    steps = []
    long = generation.generate(mono, "funk", song, 40.0, seed=7,
                               progress=lambda done, total: steps.append((done, total)))
    assert long.tokens.shape == (4, 2000) and long.audio.shape == (1, 40 * 32000)
    # Windows at 0 s and 18 s; the second is prompted with the last 12 s of tokens ...
    assert len(windows_seen) == 2
    plan = windows_seen[1]["plan"]
    assert plan.first == 1 + 600 and plan.frames == 600 + 500
    known = decoding.aligned(plan.grid, [0, 1, 2, 3], 600)
    assert torch.equal(known[0].cpu(), long.tokens[:, 900:1500])
    assert bool(plan.fixed[:, :601].all()) and not bool(plan.fixed[0, 601:1101].any())
    # ... and conditioned on the chords of its own part of the song, cut from the one chroma.
    expected = chords.window_chroma(song, [0.0, 18.0])
    for call, window in zip(windows_seen, expected):
        with torch.inference_mode():
            projected = mono.audio_enc_to_dec_proj(torch.from_numpy(window)[None])
        assert torch.equal(call["prefix"][:1, :235], projected)
    assert not np.array_equal(expected[0], expected[1])
    # Progress counts every generated step once, up to the total.
    assert steps[-1][0] == steps[-1][1] == (1500 + 3) + (500 + 3)
    assert all(b[0] > a[0] for a, b in zip(steps, steps[1:]))
    # The first window is the same as a 30 s generation with the same seed.
    short = generation.generate(mono, "funk", song, 30.0, seed=7)
    assert torch.equal(long.tokens[:, :1500], short.tokens)


def test_window_starts():
    assert generation.window_starts(12.0) == [0.0]
    assert generation.window_starts(30.0) == [0.0]
    assert generation.window_starts(30.5) == [0.0, 18.0]
    assert generation.window_starts(70.0) == [0.0, 18.0, 36.0, 54.0]


def test_model_cache_keeps_one_model_per_version_within_budget(tiny_weights):
    paths = [tiny_weights / "musicgen" / f"musicgen-{v}.th" for v in ("chord", "stereo-chord")]
    encoders = encoders_in(str(tiny_weights), "cpu")
    cpu = torch.device("cpu")
    roomy = models.ModelCache(budget_bytes=10 * 2**30)
    first = roomy.get(paths[0], cpu, encoders)
    assert roomy.get(paths[0], cpu, encoders) is first  # loaded once
    roomy.get(paths[1], cpu, encoders)
    assert len(roomy) == 2
    tight = models.ModelCache(budget_bytes=max(models.estimated_bytes(p, cpu) for p in paths) + 1)
    tight.get(paths[0], cpu, encoders)
    tight.get(paths[1], cpu, encoders)
    assert len(tight) == 1  # the older model was unloaded to make room


def test_sampling_settings_reach_the_sampler(mono):
    greedyish = Sampling(top_k=1, top_p=0.0, temperature=1.0, classifier_free_guidance=3.0)
    a = generation.generate(mono, "rock", _chroma(1), 1.0, Sampling(top_k=1), seed=1)
    b = generation.generate(mono, "rock", _chroma(1), 1.0, greedyish, seed=2)
    assert torch.equal(a.tokens, b.tokens)  # top_k=1 leaves no choice: the seed does not matter
    nucleus = generation.generate(mono, "rock", _chroma(1), 1.0, Sampling(top_p=0.9, temperature=1.5), seed=1)
    assert nucleus.tokens.shape == a.tokens.shape


def test_overlong_prompt_is_truncated_with_a_warning(mono, caplog):
    words = " ".join(["guitar"] * 700)
    with caplog.at_level("WARNING"):
        result = generation.generate(mono, words, _chroma(1), 0.5, seed=1)
    assert "T5 reads the first 512" in caplog.text
    assert result.audio.shape == (1, 16000)


def test_window_new_frames_cover_the_song_once():
    assert generation.window_new_frames(10.0) == [500]
    assert generation.window_new_frames(40.0) == [1500, 500]
    for duration in (30.5, 47.9, 70.0, 123.4):
        assert sum(generation.window_new_frames(duration)) == int(np.ceil(duration * 50))
