"""Our decode loop: per-step logits against audiocraft's, the static (CUDA-graph) step, the sampler's laws."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from remixer import decoding, generation
from remixer.generation import Sampling
from remixer.testing.musicgen import load_tiny

FIXTURES = Path(__file__).parent / "fixtures" / "musicgen"
NAMES = ["musicgen-tiny-chord", "musicgen-tiny-stereo-chord"]


def _load(name: str, tmp_path: Path, weights: Path, device: str = "cpu"):
    th = tmp_path / f"{name}.th"
    shutil.copy(FIXTURES / f"{name}.th", th)
    reference = torch.load(FIXTURES / f"{name}.reference.pt", weights_only=True)
    return load_tiny(th, device, weights), reference


def _text(reference) -> generation.EncodedText:
    embedding = reference["text_embedding"]
    ones = torch.ones(embedding.shape[:2], dtype=torch.long)
    return generation.EncodedText(ones, embedding, ones)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("static", [False, True], ids=["eager-step", "static-step"])
def test_every_steps_logits_match_the_reference(name, static, tmp_path, tiny_weights):
    """Teacher-forced through the loop one position at a time: each step's float32 logits within 1e-4."""
    model, reference = _load(name, tmp_path, tiny_weights)
    decoder = model.decoder_for()
    prefix = generation.condition_prefix(model, _text(reference), reference["chroma"][0].numpy(), guided=False)
    tokens = reference["tokens"]  # (1, K, S), BOS first
    expected = reference["logits"][0]  # (K, S, card): position s predicts s + 1
    steps = tokens.shape[2]
    cache = decoding.KVCache(decoder, 1, prefix.shape[1] + steps)
    table = decoder.positional(cache.length)
    with torch.inference_mode():
        first = torch.cat([prefix, decoder.embed(tokens[:, :, :1])], dim=1)
        hidden = decoder.forward(first + table[:first.shape[1]], 0, cache, causal=True)[:, -1]
        got = [decoder.logits(hidden)[0]]
        for s in range(1, steps):
            index = prefix.shape[1] + s
            embedded = decoder.embed(tokens[:, :, s:s + 1]) + table[index:index + 1]
            if static:
                hidden = decoder.forward(embedded, torch.tensor(index), cache, causal=False)[:, -1]
            else:
                hidden = decoder.step_eager(embedded[:, 0], index, cache)
            got.append(decoder.logits(hidden)[0])
    for s in range(steps):
        torch.testing.assert_close(got[s], expected[:, s], atol=1e-4, rtol=0, msg=f"step {s}")


@pytest.mark.parametrize("name", NAMES)
def test_static_steps_give_the_references_whole_song(name, tmp_path, tiny_weights, monkeypatch):
    """The CUDA graph's step function, run eagerly on the CPU: same greedy tokens as audiocraft."""
    model, reference = _load(name, tmp_path, tiny_weights)
    monkeypatch.setattr(generation, "encode_text", lambda _model, _text_: _text(reference))
    original = decoding.WindowDecoder.__init__
    monkeypatch.setattr(decoding.WindowDecoder, "__init__", lambda self, decoder, **options: original(
        self, decoder, **options, use_cuda_graph=False, static_steps=True))
    case = reference["songs"]["long"]
    result = generation.generate(model, "a song", case["chroma"].numpy(), case["seconds"],
                                 Sampling(top_k=1, classifier_free_guidance=3.0), seed=0)
    assert torch.equal(result.tokens, case["greedy_cfg3"][0])


def test_plan_places_prompt_bos_and_padding_by_codebook_delay():
    prompt = torch.arange(8 * 3).reshape(8, 3)  # stereo: 8 codebooks, 3 known frames
    delays = [k // 2 for k in range(8)]
    plan = decoding.plan_window(prompt, 2, delays, "cpu")
    assert plan.grid.shape == (1, 8, 1 + 5 + 3) and plan.first == 4 and plan.frames == 5
    for k, delay in enumerate(delays):
        assert (plan.grid[0, k, :1 + delay] == decoding.SPECIAL).all()  # BOS and the delay
        assert torch.equal(plan.grid[0, k, 1 + delay:4 + delay], prompt[k])
        assert plan.fixed[k].tolist() == [i < 4 + delay or i >= 6 + delay for i in range(9)]
    assert torch.equal(decoding.aligned(plan.grid, delays, 3), prompt[None])


# --- the sampler -------------------------------------------------------------------------------


def _draws(logits: torch.Tensor, settings: decoding.Sampling, count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return decoding.sample(logits.expand(count, -1), settings, generator)


LOGITS = torch.tensor([[2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0]])


def test_sampling_follows_softmax_over_temperature():
    for temperature in (1.0, 0.5, 2.0):
        draws = _draws(LOGITS, decoding.Sampling(top_k=0, temperature=temperature), 40_000)
        counts = torch.bincount(draws, minlength=8).double()
        expected = torch.softmax(LOGITS[0].double() / temperature, 0) * draws.numel()
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 24.3, (temperature, chi2)  # 7 degrees of freedom: p = 0.001


def test_top_k_never_draws_outside_the_k_most_likely():
    draws = _draws(LOGITS, decoding.Sampling(top_k=3), 20_000)
    assert set(draws.tolist()) == {0, 1, 2}
    assert torch.equal(_draws(LOGITS, decoding.Sampling(top_k=1), 50), torch.zeros(50, dtype=torch.long))


def test_top_p_keeps_the_smallest_set_covering_p():
    probs = torch.softmax(LOGITS[0], 0)  # 0.39, 0.24, 0.14, 0.09, ...
    for top_p in (0.3, 0.6, 0.7, 0.9):
        covering = int(torch.searchsorted(probs.cumsum(0), torch.tensor(top_p))) + 1
        draws = _draws(LOGITS, decoding.Sampling(top_p=top_p, top_k=0), 20_000)
        assert set(draws.tolist()) == set(range(covering)), top_p


def test_same_seed_same_draws_and_other_seeds_differ():
    settings = decoding.Sampling(top_k=0)
    assert torch.equal(_draws(LOGITS, settings, 500, seed=3), _draws(LOGITS, settings, 500, seed=3))
    assert not torch.equal(_draws(LOGITS, settings, 500, seed=3), _draws(LOGITS, settings, 500, seed=4))


def test_each_row_and_codebook_draws_from_its_own_top_k():
    """The decode loop samples (takes, codebooks, vocabulary) logits at once: every (take, codebook) from its
    own k most likely tokens, softmax over the vocabulary axis; k equal to the vocabulary is no restriction."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn((2, 4, 50), generator=generator) * 3
    allowed = logits.topk(5, dim=-1).indices
    for seed in range(20):
        drawn = decoding.sample(logits, decoding.Sampling(top_k=5), torch.Generator().manual_seed(seed))
        assert drawn.shape == (2, 4)
        assert all(int(drawn[t, k]) in allowed[t, k].tolist() for t in range(2) for k in range(4))
    peaked = torch.full((2, 4, 50), -30.0).scatter_(2, torch.arange(8).view(2, 4, 1) * 5, 30.0)
    assert torch.equal(decoding.sample(peaked, decoding.Sampling(top_k=5), torch.Generator().manual_seed(1)),
                       torch.arange(8).view(2, 4) * 5)
    whole, free = (decoding.sample(logits, decoding.Sampling(top_k=k), torch.Generator().manual_seed(7))
                   for k in (50, 0))
    assert torch.equal(whole, free)


def test_the_shared_prefix_is_one_copy_per_guidance_half_refilled_in_place():
    from types import SimpleNamespace

    from remixer.decoding.cache import KVCache, kv_cache_bytes

    shape = SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32, cache_dtype=torch.float32, heads=2,
                            head_dim=4, layers=[0, 1])
    cache = KVCache(shape, rows=4, length=10)  # 2 takes under the condition, the same 2 under the null one
    assert cache.bytes == 2 * 2 * 4 * 2 * 10 * 4 * 4 == kv_cache_bytes(2, 8, 4, 10, bytes_per_value=4)
    assert kv_cache_bytes(48, 2048, 2, 1757) == 2 * 48 * 2 * 1757 * 2048 * 2

    def fill():
        for keys, values in cache.layers:
            keys.copy_(torch.randn_like(keys))
            values.copy_(torch.randn_like(values))

    def check(length):
        for (keys, values), (shared_keys, shared_values) in zip(cache.layers, cache.shared):
            assert shared_keys.shape == (2, 2, 4, length) and shared_values.shape == (2, 2, length, 4)
            assert torch.equal(shared_keys, keys[::2, :, :, :length])
            assert torch.equal(shared_values, values[::2, :, :length])

    fill()
    cache.share_prefix(3, 2)
    check(3)
    buffers = [k.data_ptr() for k, _ in cache.shared]
    fill()
    cache.share_prefix(3, 2)  # the next window: the same buffers (graphs read them), refilled
    check(3)
    assert [k.data_ptr() for k, _ in cache.shared] == buffers
    cache.share_prefix(5, 2)
    check(5)
    keys_live, values_live, scratch = cache.live(7)
    assert [k.shape for k in keys_live] == [(8, 4, 7)] * 2 and [v.shape for v in values_live] == [(8, 7, 4)] * 2
    assert scratch.shape == (8, 1, 7)
    assert torch.equal(keys_live[1], cache.layers[1][0].reshape(8, 4, 10)[..., :7])


# --- CUDA (run by the GPU check; skipped without a GPU) ------------------------------------------

cuda = pytest.mark.cuda


@cuda
@pytest.mark.parametrize("name", NAMES)
def test_cuda_graph_float32_gives_the_reference_tokens_for_the_whole_song(name, tmp_path, tiny_weights, monkeypatch):
    """The captured step in float32: exactly the reference's greedy tokens for the two-window song, and
    every window was decoded by the graph (strict: a failed capture would be an error, not a fallback)."""
    monkeypatch.setenv("REMIXER_DECODER_DTYPE", "float32")
    monkeypatch.setenv(decoding.GRAPHS_ENV, "strict")
    model, reference = _load(name, tmp_path, tiny_weights, "cuda")
    assert model.decoder_for().dtype == torch.float32
    monkeypatch.setattr(generation, "encode_text", lambda _model, _text_: _text(reference))
    case = reference["songs"]["long"]
    result = generation.generate(model, "a song", case["chroma"].numpy(), case["seconds"],
                                 Sampling(top_k=1, classifier_free_guidance=3.0), seed=0)
    assert result.decode_modes == (decoding.GRAPH,) * 2
    assert torch.equal(result.tokens.cpu(), case["greedy_cfg3"][0])


def _window_tokens(model, settings: Sampling, seed: int, **window_options):
    decoder = model.decoder_for()
    chroma = np.zeros((235, 12), np.float32)
    chroma[:, [0, 4, 7]] = 1
    prefix = generation.condition_prefix(model, generation.encode_text(model, "jazz"), chroma, settings.guided)
    plan = decoding.plan_window(torch.zeros((model.facts.codebooks, 0), dtype=torch.long), 200, decoder.delays,
                                decoder.device)
    window = decoding.WindowDecoder(decoder, **window_options)
    tokens = window.decode(prefix, plan, settings, torch.Generator(device=decoder.device).manual_seed(seed))
    return tokens, window.modes


@cuda
@pytest.mark.parametrize("settings", [Sampling(top_k=1), Sampling(top_k=250)], ids=["greedy", "sampled"])
def test_cuda_graph_replay_equals_the_eager_static_step_in_float16(settings, tiny_weights, monkeypatch):
    """float16, same device and dtype: the graph's tokens equal the eager static step's token for token,
    greedy and sampled (the warm-up's and the capture's random numbers are given back)."""
    monkeypatch.setenv(decoding.GRAPHS_ENV, "strict")
    model = load_tiny(tiny_weights / "musicgen" / "musicgen-stereo-chord.th", "cuda", tiny_weights)
    assert model.decoder_for().dtype == torch.float16
    graph, modes = _window_tokens(model, settings, 5)
    eager, eager_modes = _window_tokens(model, settings, 5, use_cuda_graph=False, static_steps=True)
    assert modes == [decoding.GRAPH] and eager_modes == [decoding.EAGER]
    assert torch.equal(graph, eager)


@cuda
def test_cuda_graph_on_the_last_visible_device(tiny_weights, monkeypatch):
    """Streams, graph and generator on the model's device, not the current one (cuda:0)."""
    monkeypatch.setenv(decoding.GRAPHS_ENV, "strict")
    device = f"cuda:{torch.cuda.device_count() - 1}"
    model = load_tiny(tiny_weights / "musicgen" / "musicgen-chord.th", device, tiny_weights)
    graph, modes = _window_tokens(model, Sampling(top_k=250), 9)
    eager, _ = _window_tokens(model, Sampling(top_k=250), 9, use_cuda_graph=False, static_steps=True)
    assert modes == [decoding.GRAPH] and graph.device == torch.device(device) and torch.equal(graph, eager)


@cuda
def test_cuda_sampling_is_reproducible_for_a_seed(tmp_path, tiny_weights, monkeypatch):
    monkeypatch.setenv(decoding.GRAPHS_ENV, "strict")
    model = load_tiny(tiny_weights / "musicgen" / "musicgen-chord.th", "cuda", tiny_weights)
    chroma = np.zeros((300, 12), np.float32)
    first = generation.generate(model, "x", chroma, 2.0, seed=5)
    assert first.decode_modes == (decoding.GRAPH,)
    assert torch.equal(first.tokens, generation.generate(model, "x", chroma, 2.0, seed=5).tokens)
    monkeypatch.setenv(decoding.GRAPHS_ENV, "0")  # the eager path draws the same numbers
    eager = generation.generate(model, "x", chroma, 2.0, seed=5)
    assert eager.decode_modes == (decoding.EAGER,)


@pytest.mark.parametrize("name", NAMES)
def test_graph_steps_give_the_references_whole_song_capturing_once_per_bucket(name, tmp_path, tiny_weights,
                                                                                monkeypatch):
    """The graph path with the CPU stand-in, two windows of one request: the reference's greedy tokens, one
    cache allocated, and one graph per bucket the first window reaches (the second, shorter window replays
    them: it captured a graph of its own before buckets)."""
    from tests.test_capture import FakeGraphs, spy_steps

    model, reference = _load(name, tmp_path, tiny_weights)
    monkeypatch.setattr(generation, "encode_text", lambda _model, _text_: _text(reference))
    graphs, windows, caches = FakeGraphs(), [], []
    original, cache_init = decoding.WindowDecoder.__init__, decoding.KVCache.__init__

    def with_graphs(self, decoder, **options):
        original(self, decoder, **options, use_cuda_graph=True, graphs=graphs)
        spy_steps(self, graphs)
        windows.append(self)

    monkeypatch.setattr(decoding.WindowDecoder, "__init__", with_graphs)
    monkeypatch.setattr(decoding.KVCache, "__init__", lambda self, *args: caches.append(1) or cache_init(self, *args))
    case = reference["songs"]["long"]
    result = generation.generate(model, "a song", case["chroma"].numpy(), case["seconds"],
                                 Sampling(top_k=1, classifier_free_guidance=3.0), seed=0)
    assert torch.equal(result.tokens, case["greedy_cfg3"][0])
    assert result.decode_modes == (decoding.GRAPH,) * 2 and len(caches) == 1
    (window,) = windows
    prefix_length = model.config.chroma_length + reference["text_embedding"].shape[1]
    first_window = range(prefix_length + 1, prefix_length + 1 + 1500 + model.facts.max_delay - 1)
    buckets = {decoding.span_for(index, window._state.cache.length) for index in first_window}
    assert window.captures == len(graphs.captured) == len(buckets) == 7
