"""The CUDA-graph capture path of the decode loop, on the CPU: a stand-in for the CUDA calls replays the
recorded step, fails at each point of a capture on demand, and the tests check what the product promises:
the same tokens as eager decoding for a seed, a restored state after any failure, strict mode, OOM."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from remixer import decoding, generation
from remixer.decoding import DecodingError, Sampling, WindowDecoder
from remixer.testing.musicgen import load_tiny

PHASES = ["graph", "warm-up", "capture-start", "capture", "capture-end"]
SETTINGS = Sampling(top_k=50, temperature=1.0, classifier_free_guidance=3.0)


class FakeGraph:
    def __init__(self):
        self.recorded = None  # (step, its arguments), set by the capture
        self.replays = 0

    def replay(self) -> None:
        step, args = self.recorded
        self.replays += 1
        step(*args)


class FakeStream:
    def wait_stream(self, other) -> None:
        pass


class FakeGraphs:
    """decoding.CudaGraphs on the CPU. Capture records the step (nothing runs, but random numbers are
    reserved, as a CUDA capture reserves them); replay runs it. `fail_at` makes one phase raise after
    doing its work; `still_capturing` reports a stream left in capture mode."""

    def __init__(self, fail_at: str | None = None, error: BaseException | None = None,
                 still_capturing: bool = False):
        self.fail_at, self.error = fail_at, error or RuntimeError(f"injected failure at {fail_at}")
        self.still_capturing = still_capturing
        self.phase = None
        self.captured: list[FakeGraph] = []  # in capture order
        self.capturing_graph = None
        self.pools: list = []  # the pool each capture was given
        self.in_device = False
        self.lock_held_in_capture = None

    @contextlib.contextmanager
    def device_context(self):
        self.in_device = True
        try:
            yield
        finally:
            self.in_device = False

    def new_graph(self, generator):
        if self.fail_at == "graph":
            raise self.error
        return FakeGraph()

    def side_stream(self):
        return FakeStream()

    def current_stream(self):
        return FakeStream()

    @contextlib.contextmanager
    def use_stream(self, stream):
        self.phase = "warm-up"
        try:
            yield
        finally:
            self.phase = None

    @contextlib.contextmanager
    def capture(self, graph, stream, pool=None):
        if self.fail_at == "capture-start":
            raise self.error
        self.phase, self.capturing_graph = "capture", graph
        self.pools.append(pool)
        self.lock_held_in_capture = decoding.graphs.CAPTURE_LOCK.locked()
        try:
            yield
        finally:
            self.phase, self.capturing_graph = None, None
        if self.fail_at == "capture-end":
            raise self.error
        self.captured.append(graph)

    def pool_of(self, graph):
        return ("pool of", id(graph))

    @property
    def recorded(self):
        """Whether any step was recorded."""
        return self.captured or None

    def capturing(self) -> bool:
        return self.still_capturing

    def synchronize(self) -> None:
        pass


def spy_steps(window: WindowDecoder, graphs: FakeGraphs) -> None:
    """Route the window's steps through the stand-in: record during capture, fail where asked."""
    real = window._step

    def step(state, settings, generator, guided, eager, span=None):
        assert graphs.in_device  # every step runs under the model's device context
        if graphs.phase == "capture":
            graphs.capturing_graph.recorded = (real, (state, settings, generator, guided, eager, span))
            torch.rand(64, generator=generator)  # capture reserves random numbers
            state.position += 1  # ... and may leave the position advanced when it fails
            if graphs.fail_at == "capture":
                raise graphs.error
            state.position -= 1
            return
        real(state, settings, generator, guided, eager, span)
        if graphs.phase == "warm-up" and graphs.fail_at == "warm-up":
            raise graphs.error

    window._step = step


@pytest.fixture(scope="module")
def window_inputs(tiny_weights):
    model = load_tiny(tiny_weights / "musicgen" / "musicgen-chord.th", "cpu", tiny_weights)
    chroma = np.zeros((235, 12), np.float32)
    chroma[:, [0, 4, 7]] = 1
    prefix = generation.condition_prefix(model, generation.encode_text(model, "jazz"), chroma, guided=True)
    decoder = model.decoder_for()
    plan = decoding.plan_window(torch.zeros((4, 0), dtype=torch.long), 60, decoder.delays, decoder.device)
    return decoder, prefix, plan


def decode(window: WindowDecoder, inputs, seed: int = 11) -> torch.Tensor:
    decoder, prefix, plan = inputs
    return window.decode(prefix, plan, SETTINGS, torch.Generator().manual_seed(seed))[0]


def eager_tokens(inputs, seed: int = 11) -> torch.Tensor:
    return decode(WindowDecoder(inputs[0], use_cuda_graph=False, static_steps=True), inputs, seed)


def graph_window(inputs, graphs: FakeGraphs, strict: bool = False) -> WindowDecoder:
    window = WindowDecoder(inputs[0], use_cuda_graph=True, graphs=graphs, strict=strict)
    spy_steps(window, graphs)
    return window


def test_graph_path_gives_the_eager_paths_sampled_tokens_for_a_seed(window_inputs):
    graphs = FakeGraphs()
    window = graph_window(window_inputs, graphs)
    tokens = decode(window, window_inputs)
    assert window.modes == [decoding.GRAPH] and graphs.recorded is not None
    # The warm-up drew random numbers and the capture reserved some: both were given back.
    assert torch.equal(tokens, eager_tokens(window_inputs))
    assert not torch.equal(tokens, eager_tokens(window_inputs, seed=12))  # the seed does matter
    assert graphs.lock_held_in_capture  # one capture at a time in the process


@pytest.mark.parametrize("phase", PHASES)
def test_a_failed_capture_falls_back_to_eager_with_the_same_tokens(window_inputs, phase):
    window = graph_window(window_inputs, FakeGraphs(fail_at=phase))
    tokens = decode(window, window_inputs)
    assert window.modes[0].startswith("eager (capture failed: injected failure at")
    assert (tokens < decoding.SPECIAL).all()  # no special token left in the grid
    assert torch.equal(tokens, eager_tokens(window_inputs))
    assert not decoding.graphs.CAPTURE_LOCK.locked()


@pytest.mark.parametrize("phase", PHASES)
def test_strict_mode_makes_a_failed_capture_an_error(window_inputs, phase):
    window = graph_window(window_inputs, FakeGraphs(fail_at=phase), strict=True)
    with pytest.raises(DecodingError, match=r"capture failed \(injected failure at .*REMIXER_CUDA_GRAPHS=strict"):
        decode(window, window_inputs)
    assert not decoding.graphs.CAPTURE_LOCK.locked()


def test_out_of_memory_during_capture_is_raised_for_the_pipeline(window_inputs):
    window = graph_window(window_inputs, FakeGraphs(fail_at="capture", error=torch.cuda.OutOfMemoryError("fake")))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        decode(window, window_inputs)


def test_a_stream_left_capturing_stops_decoding_with_a_message(window_inputs):
    window = graph_window(window_inputs, FakeGraphs(fail_at="capture-end", still_capturing=True))
    with pytest.raises(DecodingError, match="restart it"):
        decode(window, window_inputs)


def test_the_state_is_restored_even_when_the_capture_succeeds(window_inputs):
    """Decoding two windows with one WindowDecoder: each captures afresh and both match eager decoding."""
    graphs = FakeGraphs()
    window = graph_window(window_inputs, graphs)
    first, second = decode(window, window_inputs, 3), decode(window, window_inputs, 4)
    assert window.modes == [decoding.GRAPH, decoding.GRAPH]
    assert torch.equal(first, eager_tokens(window_inputs, 3)) and torch.equal(second, eager_tokens(window_inputs, 4))


def test_cuda_graphs_setting(monkeypatch, window_inputs):
    decoder = window_inputs[0]
    for value, expected in (("1", "1"), ("", "1"), ("0", "0"), (" STRICT ", "strict")):
        monkeypatch.setenv(decoding.GRAPHS_ENV, value)
        assert decoding.graph_mode() == expected
    monkeypatch.setenv(decoding.GRAPHS_ENV, "strict")
    assert WindowDecoder(decoder).strict and not WindowDecoder(decoder).use_cuda_graph  # the CPU never captures
    monkeypatch.setenv(decoding.GRAPHS_ENV, "yes")
    with pytest.raises(DecodingError, match="must be 1 .* 0 .* or strict"):
        WindowDecoder(decoder)


def test_the_cpu_path_touches_no_cuda_call(window_inputs, monkeypatch):
    def no_cuda(*args, **kwargs):
        raise AssertionError("a CUDA call on the CPU path")

    for name in ("device", "stream", "Stream", "current_stream", "synchronize", "graph", "CUDAGraph"):
        monkeypatch.setattr(torch.cuda, name, no_cuda)
    window = WindowDecoder(window_inputs[0], timed=True)
    assert torch.equal(decode(window, window_inputs), eager_tokens(window_inputs))
    assert window.modes == [decoding.EAGER] and set(window.timings[0]) == {"prefill", "capture", "steps",
                                                                           "step_count"}


# --- length buckets --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_window(window_inputs):
    """A window long enough for four buckets: the tiny prefix (238 positions) + 604 grid positions."""
    decoder, prefix, _ = window_inputs
    plan = decoding.plan_window(torch.zeros((4, 0), dtype=torch.long), 600, decoder.delays, decoder.device)
    return decoder, prefix, plan


class CacheReads(torch.overrides.TorchFunctionMode):
    """Records the shape of every matmul operand (its storage address too): the attention's reads."""

    def __init__(self):
        super().__init__()
        self.reads: list[tuple[int, torch.Size]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.matmul:
            self.reads += [(arg.untyped_storage().data_ptr(), arg.shape) for arg in args]
        return func(*args, **(kwargs or {}))


def test_the_static_step_reads_the_cache_at_most_one_bucket_past_its_position(long_window):
    """Counted, not timed: the keys and values each step's attention touches end within one bucket of the
    position it feeds, layer by layer; reading the whole cache would touch 1.29x as many over this window."""
    decoder, prefix, plan = long_window
    window = WindowDecoder(decoder, use_cuda_graph=False, static_steps=True)
    with CacheReads() as recorder:
        window.decode(prefix, plan, SETTINGS, torch.Generator().manual_seed(1))
    cache = window._state.cache
    keys = {k.untyped_storage().data_ptr() for k, _ in cache.layers}
    values = {v.untyped_storage().data_ptr() for _, v in cache.layers}
    key_spans = [shape[-1] for pointer, shape in recorder.reads if pointer in keys]
    value_spans = [shape[-2] for pointer, shape in recorder.reads if pointer in values]
    layers, prefix_length = len(decoder.layers), prefix.shape[1]
    fed = list(range(prefix_length + plan.first, prefix_length + plan.grid.shape[2] - 1))
    assert len(key_spans) == len(value_spans) == layers * len(fed)
    for step, index in enumerate(fed):
        spans = set(key_spans[step * layers:(step + 1) * layers]) | set(value_spans[step * layers:(step + 1) * layers])
        (span,) = spans  # one bucket for every layer of a step
        assert index + 1 <= span <= min(index + decoding.BUCKET, cache.length), (step, index, span)
    positions_read = sum(key_spans) + sum(value_spans)
    assert positions_read == sum(2 * layers * decoding.span_for(index, cache.length) for index in fed)
    assert positions_read * 1.25 < 2 * layers * len(fed) * cache.length  # the whole cache: 1.29x here
    assert sorted(set(key_spans)) == [256, 512, 768, cache.length]


def test_one_graph_per_bucket_in_one_pool_gives_the_eager_static_steps_tokens(long_window):
    graphs = FakeGraphs()
    window = graph_window(long_window, graphs)
    tokens = decode(window, long_window)
    spans = [graph.recorded[1][-1] for graph in graphs.captured]
    assert spans == [256, 512, 768, window._state.cache.length] and window.captures == 4
    assert graphs.pools == [None] + [("pool of", id(graphs.captured[0]))] * 3  # the first graph's pool, shared
    assert sum(graph.replays for graph in graphs.captured) == plan_steps(long_window[2])
    assert torch.equal(tokens, eager_tokens(long_window))


def plan_steps(plan) -> int:
    return plan.grid.shape[2] - 1 - plan.first


def test_a_failed_capture_is_not_retried_for_the_requests_later_windows(window_inputs):
    """One WindowDecoder, one generator (a request): the first window's capture fails, both windows decode
    eagerly and only one capture was tried."""
    graphs = FakeGraphs(fail_at="capture")
    attempts = []
    new_graph = graphs.new_graph
    graphs.new_graph = lambda generator: attempts.append(1) or new_graph(generator)
    window = graph_window(window_inputs, graphs)
    generator = torch.Generator().manual_seed(5)
    decoder, prefix, plan = window_inputs
    first = window.decode(prefix, plan, SETTINGS, generator)
    second = window.decode(prefix, plan, SETTINGS, generator)
    assert len(attempts) == 1 and all(mode.startswith("eager (capture failed") for mode in window.modes)
    eager = WindowDecoder(decoder, use_cuda_graph=False, static_steps=True)
    generator = torch.Generator().manual_seed(5)
    assert torch.equal(first, eager.decode(prefix, plan, SETTINGS, generator))
    assert torch.equal(second, eager.decode(prefix, plan, SETTINGS, generator))


def _logits_of(window: WindowDecoder, prefix, plan, monkeypatch) -> torch.Tensor:
    seen = []
    real = decoding.Decoder.logits
    monkeypatch.setattr(decoding.Decoder, "logits", lambda self, hidden: seen.append(real(self, hidden)) or seen[-1])
    tokens = window.decode(prefix, plan, Sampling(top_k=1, classifier_free_guidance=3.0), None)
    monkeypatch.setattr(decoding.Decoder, "logits", real)
    return torch.stack(seen), tokens


def test_four_takes_read_one_condition_prefix_per_guidance_half(long_window, monkeypatch):
    """With takes, the static step reads the condition prefix once per guidance half (2 copies, not 8) and
    each row's own positions after it. Against every row reading its own copy: the same greedy tokens and
    every step's logits within 1e-5 (measured: 1.5e-7; only the summation order differs). Graph == eager."""
    decoder, prefix, _ = long_window
    plan = decoding.plan_window(torch.zeros((4, 0), dtype=torch.long), 600, decoder.delays, "cpu", takes=4)
    shared = WindowDecoder(decoder, use_cuda_graph=False, static_steps=True)
    with CacheReads() as recorder:
        shared_logits, shared_tokens = _logits_of(shared, prefix, plan, monkeypatch)
    own_logits, own_tokens = _logits_of(WindowDecoder(decoder, use_cuda_graph=False, static_steps=True,
                                                      share_prefix=False), prefix, plan, monkeypatch)
    assert torch.equal(shared_tokens, own_tokens)
    torch.testing.assert_close(shared_logits, own_logits, atol=1e-5, rtol=0)

    cache, length = shared._state.cache, prefix.shape[1]
    copies = {k.untyped_storage().data_ptr(): k.shape for k, _ in cache.shared}
    rows_keys = {k.untyped_storage().data_ptr() for k, _ in cache.layers}
    prefix_reads = [shape for pointer, shape in recorder.reads if pointer in copies]
    own_reads = [shape for pointer, shape in recorder.reads if pointer in rows_keys]
    steps = plan_steps(plan) * len(decoder.layers)
    assert len(prefix_reads) == len(own_reads) == steps
    assert all(shape[0] == 2 and shape[-1] == length for shape in prefix_reads)  # one copy per half
    assert all(shape[0] == 8 for shape in own_reads)  # 4 takes x 2 halves ...
    fed = range(length + plan.first, length + plan.grid.shape[2] - 1)
    spans = [decoding.span_for(index, cache.length) - length for index in fed for _ in decoder.layers]
    assert [shape[-1] for shape in own_reads] == spans  # ... from the prefix's end to the bucket's

    graphs = FakeGraphs()
    window = graph_window(long_window, graphs)
    graph_tokens = window.decode(prefix, plan, SETTINGS, torch.Generator().manual_seed(2))
    eager = WindowDecoder(decoder, use_cuda_graph=False, static_steps=True)
    assert torch.equal(graph_tokens, eager.decode(prefix, plan, SETTINGS, torch.Generator().manual_seed(2)))
