"""MusicGen-Chord: parity of the converted model with audiocraft, caching, long-form generation."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.modeling_outputs import BaseModelOutput

from btc import ChordSegment
from remixer import chords, generation
from remixer.generation import GenerationError, Sampling, load_musicgen_chord

FIXTURES = Path(__file__).parent / "fixtures" / "musicgen"


class FixedTextEncoder(torch.nn.Module):
    """Gives the reference's fixed text embedding, as the fixtures bypass T5 (a stock model)."""

    main_input_name = "input_ids"

    def __init__(self, embedding: torch.Tensor, config):
        super().__init__()
        self.embedding = embedding
        self.config = config

    def forward(self, input_ids=None, attention_mask=None, **_):
        return BaseModelOutput(last_hidden_state=self.embedding.expand(input_ids.shape[0], -1, -1))


def _reference_model(name: str, tmp_path: Path, weights_dir: Path):
    th = tmp_path / f"{name}.th"
    shutil.copy(FIXTURES / f"{name}.th", th)
    reference = torch.load(FIXTURES / f"{name}.reference.pt", weights_only=True)
    model = load_musicgen_chord(th, "cpu", weights_dir)
    model.text_encoder = FixedTextEncoder(reference["text_embedding"], model.text_encoder.config)
    return model, reference


def _text_inputs(reference):
    tokens = reference["text_embedding"].shape[1]
    return {"input_ids": torch.ones((1, tokens), dtype=torch.long),
            "attention_mask": torch.ones((1, tokens), dtype=torch.long)}


@pytest.mark.parametrize("name", ["musicgen-tiny-chord", "musicgen-tiny-stereo-chord"])
def test_converted_model_reproduces_reference_logits(name, tmp_path, tiny_weights):
    model, reference = _reference_model(name, tmp_path, tiny_weights)
    tokens = reference["tokens"]  # (1, K, S)
    codebooks, steps = tokens.shape[1:]
    with torch.inference_mode():
        logits = model(**_text_inputs(reference), input_features=reference["chroma"],
                       decoder_input_ids=tokens.reshape(codebooks, steps)).logits
    logits = logits[:, -steps:]  # transformers also scores the prepended condition positions
    expected = reference["logits"][0]  # (K, S, card)
    assert logits.shape == expected.shape
    # float32 on both sides, same operations in a different order.
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["musicgen-tiny-chord", "musicgen-tiny-stereo-chord"])
@pytest.mark.parametrize("guidance,key", [(None, "greedy_no_cfg"), (3.0, "greedy_cfg3")])
def test_greedy_tokens_match_the_reference(name, guidance, key, tmp_path, tiny_weights):
    model, reference = _reference_model(name, tmp_path, tiny_weights)
    expected = reference[key][0]  # (K, frames)
    facts = model.chord_facts
    collector = generation._TokenCollector(lambda: None)
    with torch.inference_mode():
        model.generate(**_text_inputs(reference), input_features=reference["chroma"], do_sample=False,
                       guidance_scale=guidance, max_new_tokens=expected.shape[1] + facts.max_delay,
                       streamer=collector)
    tokens = generation._undelay(collector.grid(), facts)
    assert torch.equal(tokens, expected)


def test_facts_of_every_version(tiny_weights):
    for version, channels, codebooks in (("chord", 1, 4), ("chord-large", 1, 4), ("stereo-chord", 2, 8),
                                         ("stereo-chord-large", 2, 8)):
        model = load_musicgen_chord(tiny_weights / "musicgen" / f"musicgen-{version}.th", "cpu", tiny_weights)
        facts = model.chord_facts
        assert (facts.version, facts.channels, facts.codebooks, facts.max_delay) == (version, channels, codebooks, 3)


def test_conversion_is_cached_and_redone_when_the_source_changes(tmp_path, tiny_weights):
    th = tmp_path / "musicgen-chord.th"
    shutil.copy(tiny_weights / "musicgen" / "musicgen-chord.th", th)
    cache = generation.convert_checkpoint(th)
    state = cache / "model.safetensors"
    first = state.stat().st_mtime_ns
    assert generation.convert_checkpoint(th) == cache and state.stat().st_mtime_ns == first
    time.sleep(0.01)
    th.write_bytes(th.read_bytes())  # same content, new file: converted again
    generation.convert_checkpoint(th)
    assert state.stat().st_mtime_ns != first
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_checkpoints_and_versions_are_explained(tmp_path, tiny_weights):
    junk = tmp_path / "musicgen-chord.th"
    junk.write_bytes(b"junk")
    with pytest.raises(GenerationError, match="not a readable MusicGen-Chord checkpoint"):
        load_musicgen_chord(junk, "cpu", tiny_weights)
    with pytest.raises(GenerationError, match="not found"):
        load_musicgen_chord(tmp_path / "none.th", "cpu", tiny_weights)
    with pytest.raises(GenerationError, match="stereo-chord, stereo-chord-large, chord, chord-large"):
        generation.component_for("chord-huge")


@pytest.fixture(scope="module")
def mono(tiny_weights):
    return load_musicgen_chord(tiny_weights / "musicgen" / "musicgen-chord.th", "cpu", tiny_weights)


@pytest.fixture(scope="module")
def stereo(tiny_weights):
    return load_musicgen_chord(tiny_weights / "musicgen" / "musicgen-stereo-chord.th", "cpu", tiny_weights)


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
    with pytest.raises(GenerationError, match="prompt is empty"):
        generation.generate(mono, "   ", _chroma(1), 1.0, seed=1)


def test_long_songs_continue_window_by_window_on_their_own_chords(mono, monkeypatch):
    seen = []
    original = mono.generate

    def spy(**kwargs):
        seen.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(mono, "generate", spy)
    song = _chroma(40)
    steps = []
    long = generation.generate(mono, "funk", song, 40.0, seed=7, progress=lambda done, total: steps.append((done, total)))
    assert long.tokens.shape == (4, 2000) and long.audio.shape == (1, 40 * 32000)
    # Windows at 0 s and 18 s; the second is prompted with the last 12 s of tokens ...
    assert len(seen) == 2
    prompt = seen[1]["decoder_input_ids"]
    assert prompt.shape == (4, 1 + 600)
    assert torch.equal(prompt[:, 1:].cpu(), long.tokens[:, 900:1500])
    # ... and conditioned on the chords of its own part of the song, cut from the one chroma.
    expected = chords.window_chroma(song, [0.0, 18.0])
    for call, window in zip(seen, expected):
        assert np.array_equal(call["input_features"][0].cpu().numpy(), window)
    assert not np.array_equal(expected[0], expected[1])
    # Progress counts every generated step once, up to the total.
    assert steps[-1][0] == steps[-1][1] == (1500 + 3) + (500 + 3)
    # The first window is the same as a 30 s generation with the same seed.
    monkeypatch.setattr(mono, "generate", original)
    short = generation.generate(mono, "funk", song, 30.0, seed=7)
    assert torch.equal(long.tokens[:, :1500], short.tokens)


def test_window_starts():
    assert generation.window_starts(12.0) == [0.0]
    assert generation.window_starts(30.0) == [0.0]
    assert generation.window_starts(30.5) == [0.0, 18.0]
    assert generation.window_starts(70.0) == [0.0, 18.0, 36.0, 54.0]


def test_model_cache_keeps_one_model_per_version_within_budget(tiny_weights):
    paths = [tiny_weights / "musicgen" / f"musicgen-{v}.th" for v in ("chord", "stereo-chord")]
    roomy = generation.ModelCache(budget_bytes=10 * 2**30)
    first = roomy.get(paths[0], "cpu", tiny_weights)
    assert roomy.get(paths[0], "cpu", tiny_weights) is first  # loaded once
    roomy.get(paths[1], "cpu", tiny_weights)
    assert len(roomy) == 2
    tight = generation.ModelCache(budget_bytes=max(p.stat().st_size for p in paths) + 1)
    tight.get(paths[0], "cpu", tiny_weights)
    tight.get(paths[1], "cpu", tiny_weights)
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
