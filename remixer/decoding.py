"""Our own MusicGen-Chord decode loop: a static KV cache, one forward per step, sampling on the device.

Eager autoregressive decoding is bound by the host (audiocraft issue #192, "MusicGen on
A100/A10G/3090 is single core CPU bound"): each
step of transformers' `generate()` builds cache objects, masks and logits
processors in Python. Here a window is decoded by a plain loop over the
converted weights (the transformers model's own tensors, not a copy):

- the condition prefix (chroma + text, and the prompt of a continuation
  window) goes through the decoder once, filling a preallocated KV cache;
- then every step is one forward of one position for both classifier-free
  guidance rows, sampling on the device with the request's `torch.Generator`,
  the delay pattern's fixed positions (BOS, known prompt, end padding) applied
  with a precomputed mask; every tensor keeps its shape from step to step;
- the static step (the one a CUDA graph records) reads the cache only up to
  the end of the length bucket (`BUCKET` positions) that holds the step's
  position, so a step early in a window does not read the whole window's
  cache; each bucket is its own fixed shape; with several takes it reads the
  condition prefix once per guidance half (every take's rows share it) and each
  row's own positions after it;
- on CUDA the decoder runs in float16 and the step is captured as one CUDA
  graph per bucket, over the same buffers, memory pool and generator, and
  replayed; the loop picks the graph from the step number, which it knows
  without asking the device (`REMIXER_CUDA_GRAPHS`: 1, the default, falls back
  to the same step run eagerly if capture fails, with a log line; 0 never
  captures; strict makes a failed capture an error). A request's windows
  share the cache and the graphs (the first window is the largest). Each
  window records how it was decoded (`WindowDecoder.modes`).

The delayed grid: position 0 is BOS for every codebook; codebook k holds frame
f at position 1 + f + delay(k), delay(k) = k // channels (stereo interleaves
left/right codebooks). Positions outside a codebook's frames hold the special
token (2048), as audiocraft's pattern and transformers' delay mask do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.nn import functional as F

from remixer.errors import RemixerError
from remixer.musicgen import Sampling  # noqa: F401  (decoding's settings; defined torch-free)

log = logging.getLogger(__name__)

GRAPHS_ENV = "REMIXER_CUDA_GRAPHS"
GRAPH_MODES = ("1", "0", "strict")
GRAPH, EAGER = "cuda-graph", "eager"
# One capture at a time in the process: a capture on one thread is invalidated by another thread's
# CUDA work on the capturing stream's device (torch.cuda.graph's documentation).
_CAPTURE_LOCK = threading.Lock()


class DecodingError(RemixerError):
    """The decode loop cannot run as configured, explained."""


def graph_mode() -> str:
    """REMIXER_CUDA_GRAPHS: "1" (default: graphs, eager fallback), "0" (never capture), "strict"."""
    value = os.environ.get(GRAPHS_ENV, "1").strip().lower() or "1"
    if value not in GRAPH_MODES:
        raise DecodingError(f"{GRAPHS_ENV} must be 1 (graphs, eager fallback), 0 (no graphs) or strict "
                            f"(a failed capture is an error); got {value!r}")
    return value

SPECIAL = 2048  # BOS and padding in the delayed grid (the codebook size)
# Cache positions per length bucket. Smaller buckets read less per step but capture more graphs: 256 reads
# at most 255 positions past the live ones (under 15% of a 30 s window's cache) with 7 graphs per window.
BUCKET = 256
PROGRESS_EVERY = 25  # steps between progress reports (the host never waits on the device in between)


def sample(logits: torch.Tensor, settings: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of `logits` (rows, vocabulary), drawn on the logits' device.

    top_k == 1 is the argmax (greedy, no randomness). Otherwise softmax(logits /
    temperature) restricted to the top k, or to the smallest set whose
    probability covers top_p, sampled with exponential races (argmax of p / E,
    E ~ Exp(1)): one kernel sequence, no host synchronisation.
    """
    if settings.top_p <= 0 and settings.top_k == 1:
        return logits.argmax(dim=-1)
    scores = logits.float() / settings.temperature
    index = None  # candidates are the whole vocabulary unless restricted below
    if settings.top_p > 0:
        scores, index = scores.sort(dim=-1, descending=True)
        probs = scores.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the strictly more likely tokens
        scores = scores.masked_fill(before > settings.top_p, float("-inf"))
    elif 0 < settings.top_k < scores.shape[-1]:
        scores, index = scores.topk(settings.top_k, dim=-1)
    probs = scores.softmax(dim=-1)
    races = torch.empty_like(probs).exponential_(generator=generator)
    choice = (probs / races).argmax(dim=-1, keepdim=True)
    return (choice if index is None else index.gather(-1, choice)).squeeze(-1)


class Decoder:
    """The decoder stack of a converted MusicGen-Chord model, run step by step over a static cache."""

    def __init__(self, model, dtype: torch.dtype | None = None):
        decoder = model.decoder.model.decoder
        config = model.decoder.config
        self.device = model.device
        self.dtype = dtype or next(decoder.parameters()).dtype
        self.codebooks = config.num_codebooks
        self.channels = config.audio_channels
        self.heads = config.num_attention_heads
        self.width = config.hidden_size
        self.head_dim = self.width // self.heads
        # All codebooks' embedding tables in one (a small copy): one lookup per step, offsets per codebook.
        self.embedding_table = torch.cat([embedding.weight for embedding in decoder.embed_tokens])
        self.embedding_offsets = torch.arange(self.codebooks, device=self.device)[:, None] * (
            decoder.embed_tokens[0].weight.shape[0])
        self.heads_out = torch.stack([head.weight for head in model.decoder.lm_heads])  # (K, card, D)
        self.layers = [_fused(layer) for layer in decoder.layers]
        self.final_norm = (decoder.layer_norm.weight, decoder.layer_norm.bias)
        self.positions = decoder.embed_positions
        if config.activation_function != "gelu":
            raise ValueError(f"the decode loop implements the GELU decoder, not {config.activation_function}")
        self.activation = F.gelu  # MusicGen's exact (erf) GELU, without a module call per layer
        # MusiConGen: the layers before which the step's chord + beat sum is added again (none for the chord
        # models), as its transformer does for "in-attention" conditioning.
        facts = getattr(model, "facts", None)
        self.in_attention = frozenset(facts.in_attention if facts is not None else ())

    @property
    def delays(self) -> list[int]:
        """Each codebook's delay in frames ([0, 1, 2, 3] mono; stereo interleaves two such sets)."""
        return [k // self.channels for k in range(self.codebooks)]

    def positional(self, length: int) -> torch.Tensor:
        """The sinusoidal position table, (positions, width), in the decoder's dtype."""
        table = self.positions.get_embedding(length, self.width)
        return table.to(self.device, self.dtype)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """(rows, K, T) tokens -> (rows, T, D): the sum of the codebooks' embeddings."""
        looked_up = F.embedding(tokens + self.embedding_offsets, self.embedding_table)  # (rows, K, T, D)
        return looked_up.sum(dim=1)

    def forward(self, hidden: torch.Tensor, start: int | torch.Tensor, cache: "KVCache",
                causal: bool, condition: torch.Tensor | None = None, span: int | None = None) -> torch.Tensor:
        """Run `hidden` (rows, T, D) at absolute positions start.. start+T-1, writing keys/values to `cache`.

        causal=True: the prefill, a block from position 0 (`start` an int)
        attending causally within itself. causal=False: a CUDA-graph step, T == 1
        at a device-tensor position, attending to the cache's first `span`
        positions (default: all; `span_for` gives the position's bucket) through
        a mask, so that shapes never change within a bucket. (Eager steps use
        `step_eager`.) condition (rows, C, D): MusiConGen's per-step sum, added
        to the last C positions (the token steps) before each in-attention layer.
        """
        rows, length, _ = hidden.shape
        eager = isinstance(start, int)
        span = cache.length if span is None else span
        if not eager:
            index = start + torch.arange(length, device=hidden.device)
            # Positions after `start` are blocked: computed once per step, shared by every layer.
            after = 0 if causal or cache.shared is None else cache.shared_length  # the shared prefix is never blocked
            blocked = None if causal else (torch.arange(after, span, device=hidden.device) > start)[None, None, None]
        scale = self.head_dim ** -0.5
        for number, (layer, (keys_t, values)) in enumerate(zip(self.layers, cache.layers)):
            if condition is not None and number in self.in_attention:
                hidden = _add_to_last(hidden, condition)
            normed = F.layer_norm(hidden, (self.width,), layer.norm1_w, layer.norm1_b)
            qkv = F.linear(normed, layer.qkv).view(rows, length, 3, self.heads, self.head_dim).transpose(1, 3)
            q, k, v = qkv.unbind(2)  # each (rows, heads, T, head_dim)
            if eager:
                keys_t[:, :, :, start:start + length] = k.transpose(2, 3)
                values[:, :, start:start + length] = v
            else:
                keys_t.index_copy_(3, index, k.transpose(2, 3))
                values.index_copy_(2, index, v)
            if causal:
                attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            elif cache.shared is not None:
                attended = _shared_attention(q, keys_t, values, cache.shared[number], span, blocked, scale)
            else:  # one query against the cache up to the bucket's end, later positions masked
                scores = torch.matmul(q, keys_t[..., :span]).float().mul_(scale).masked_fill_(blocked, float("-inf"))
                attended = torch.matmul(scores.softmax(dim=-1).to(values.dtype), values[:, :, :span])
            hidden = hidden + F.linear(attended.transpose(1, 2).reshape(rows, length, self.width), layer.out)
            normed = F.layer_norm(hidden, (self.width,), layer.norm2_w, layer.norm2_b)
            hidden = hidden + F.linear(self.activation(F.linear(normed, layer.fc1)), layer.fc2)
        return F.layer_norm(hidden, (self.width,), *self.final_norm)

    def step_eager(self, hidden: torch.Tensor, position: int, cache: "KVCache",
                   condition: torch.Tensor | None = None) -> torch.Tensor:
        """One position through every layer, (rows, D) -> (rows, D), with as few operations as possible:
        on the CPU each operation costs host time, and this runs once per layer per token. condition (rows, D):
        MusiConGen's sum for this step, added again before each in-attention layer."""
        rows = hidden.shape[0]
        end = position + 1
        batch = rows * self.heads
        scale = self.head_dim ** -0.5
        for number, (layer, (keys_t, values), (keys3, values3)) in enumerate(
                zip(self.layers, cache.layers, cache.flat)):
            if condition is not None and number in self.in_attention:
                hidden = hidden + condition
            normed = F.layer_norm(hidden, (self.width,), layer.norm1_w, layer.norm1_b)
            q, k, v = torch.mm(normed, layer.qkv_t).view(rows, 3, self.heads, self.head_dim).unbind(1)
            keys_t[:, :, :, position] = k
            values[:, :, position] = v
            # Plain attention for one query as batched products over keys stored transposed: on the
            # host, a third of the fused kernel's cost at these sizes, and no copy of the cache.
            scores = torch.baddbmm(cache.scratch[:batch, :, :end], q.reshape(batch, 1, self.head_dim),
                                   keys3[:, :, :end], beta=0, alpha=scale)
            attended = torch.bmm(scores.softmax(dim=-1), values3[:, :end])
            hidden = torch.addmm(hidden, attended.view(rows, self.width), layer.out_t)
            normed = F.layer_norm(hidden, (self.width,), layer.norm2_w, layer.norm2_b)
            hidden = torch.addmm(hidden, F.gelu(torch.mm(normed, layer.fc1_t)), layer.fc2_t)
        return F.layer_norm(hidden, (self.width,), *self.final_norm)

    def logits(self, hidden_last: torch.Tensor) -> torch.Tensor:
        """(rows, D) -> (rows, K, card) float32."""
        return torch.einsum("rd,kvd->rkv", hidden_last, self.heads_out).float()


def _shared_attention(q: torch.Tensor, keys_t: torch.Tensor, values: torch.Tensor,
                      shared: tuple[torch.Tensor, torch.Tensor], span: int, blocked: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """One query per row (rows, heads, 1, hd) against its group's shared prefix (read once per group, all
    the group's rows in one product) and its own positions from the prefix's end up to `span`, one softmax
    over both: the same attention as over each row's whole cache, summed in another order."""
    prefix_keys, prefix_values = shared  # (groups, heads, hd, C), (groups, heads, C, hd)
    groups, heads, head_dim, length = prefix_keys.shape
    rows = q.shape[0]
    takes = rows // groups
    grouped = q.view(groups, takes, heads, head_dim).transpose(1, 2)  # (groups, heads, takes, hd)
    prefix_scores = torch.matmul(grouped, prefix_keys).transpose(1, 2).reshape(rows, heads, 1, length)
    own_scores = torch.matmul(q, keys_t[..., length:span])
    scores = torch.cat([prefix_scores, own_scores], dim=-1).float().mul_(scale)
    scores[..., length:].masked_fill_(blocked, float("-inf"))
    probs = scores.softmax(dim=-1).to(values.dtype)
    prefix_probs = probs[..., :length].reshape(groups, takes, heads, length).transpose(1, 2)
    from_prefix = torch.matmul(prefix_probs, prefix_values).transpose(1, 2).reshape(rows, heads, 1, head_dim)
    return from_prefix + torch.matmul(probs[..., length:], values[:, :, length:span])


def _add_to_last(hidden: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """hidden (rows, T, D) with condition (rows, C, D) added to its last C positions."""
    count = condition.shape[1]
    if count == hidden.shape[1]:
        return hidden + condition
    return torch.cat([hidden[:, :-count], hidden[:, -count:] + condition], dim=1)


@dataclass
class _Layer:
    norm1_w: torch.Tensor
    norm1_b: torch.Tensor
    qkv: torch.Tensor
    out: torch.Tensor
    norm2_w: torch.Tensor
    norm2_b: torch.Tensor
    fc1: torch.Tensor
    fc2: torch.Tensor

    def __post_init__(self):
        # Transposed views for the step's matrix products, made once (a view per call costs host time).
        self.qkv_t, self.out_t, self.fc1_t, self.fc2_t = self.qkv.t(), self.out.t(), self.fc1.t(), self.fc2.t()


def _fused(layer) -> _Layer:
    """One (3D, D) projection for q, k and v; the transformers layer then reads views of it (one copy)."""
    attention = layer.self_attn
    fused = getattr(attention, "fused_qkv", None)
    if fused is None:
        q, k, v = (proj.weight.detach() for proj in (attention.q_proj, attention.k_proj, attention.v_proj))
        fused = torch.cat([q, k, v])
        width = q.shape[0]
        for name, part in zip(("q_proj", "k_proj", "v_proj"), fused.split(width)):
            getattr(attention, name).weight = torch.nn.Parameter(part, requires_grad=False)
        attention.fused_qkv = fused
    return _Layer(layer.self_attn_layer_norm.weight, layer.self_attn_layer_norm.bias, fused,
                  attention.out_proj.weight, layer.final_layer_norm.weight, layer.final_layer_norm.bias,
                  layer.fc1.weight, layer.fc2.weight)


class KVCache:
    """Per layer: keys stored transposed (rows, heads, head_dim, length) and values (rows, heads, length,
    head_dim), allocated once per window."""

    def __init__(self, decoder: Decoder, rows: int, length: int):
        self.length = length
        self.rows = rows
        options = dict(device=decoder.device, dtype=decoder.dtype)
        self.layers = [(torch.zeros((rows, decoder.heads, decoder.head_dim, length), **options),
                        torch.zeros((rows, decoder.heads, length, decoder.head_dim), **options))
                       for _ in decoder.layers]
        # The same memory as (rows * heads) batches, for the eager step's batched products.
        batch = rows * decoder.heads
        self.flat = [(keys.view(batch, decoder.head_dim, length), values.view(batch, length, decoder.head_dim))
                     for keys, values in self.layers]
        self.scratch = torch.zeros((batch, 1, length), **options)
        self.shared: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # see share_prefix
        self.shared_length = 0
        self.groups = 1

    def share_prefix(self, length: int, groups: int) -> None:
        """Copy the first `length` positions (the condition prefix) of one row per group into buffers the
        static step reads instead of every row's own copy. Rows come in `groups` (guidance's halves) of equal
        consecutive rows sharing a prefix. The buffers are made once and refilled per window (graphs keep them)."""
        takes = self.rows // groups
        if self.shared is None or self.shared_length != length or self.groups != groups:
            self.shared = [(keys[::takes, :, :, :length].clone(), values[::takes, :, :length].clone())
                           for keys, values in self.layers]
            self.shared_length, self.groups = length, groups
            return
        for (keys, values), (shared_keys, shared_values) in zip(self.layers, self.shared):
            shared_keys.copy_(keys[::takes, :, :, :length])
            shared_values.copy_(values[::takes, :, :length])

    @property
    def bytes(self) -> int:
        """Bytes the keys and values hold."""
        return sum(k.numel() * k.element_size() * 2 for k, _ in self.layers)


@dataclass
class WindowPlan:
    """The delayed grid of one window, for each take: tokens, which positions are fixed, where generation
    starts. Takes share the layout (`fixed`, `first`); each has its own prompt."""

    grid: torch.Tensor  # (takes, K, positions) long: BOS, prompt and padding filled, the rest to generate
    fixed: torch.Tensor  # (K, positions) bool: True where the grid's value is given
    first: int  # first position with a token to generate
    frames: int  # frames of the window (prompt + new)

    @property
    def takes(self) -> int:
        """Rows of tokens decoded together (guidance doubles them in the batch)."""
        return self.grid.shape[0]


def plan_window(prompt: torch.Tensor, new_frames: int, delays: list[int], device, takes: int = 1) -> WindowPlan:
    """`prompt` aligned codes known at the window's start, (K, L) shared by `takes` takes or (takes, K, L)
    one per take; `new_frames` to generate after them."""
    prompts = prompt[None].expand(takes, -1, -1) if prompt.dim() == 2 else prompt
    count, codebooks, known = prompts.shape
    frames = known + new_frames
    positions = 1 + frames + max(delays)
    grid = torch.full((count, codebooks, positions), SPECIAL, dtype=torch.long)
    fixed = torch.ones((codebooks, positions), dtype=torch.bool)
    for k, delay in enumerate(delays):
        grid[:, k, 1 + delay:1 + delay + known] = prompts[:, k]
        fixed[k, 1 + delay + known:1 + delay + frames] = False
    return WindowPlan(grid.to(device), fixed.to(device), 1 + known, frames)


def aligned(grid: torch.Tensor, delays: list[int], frames: int) -> torch.Tensor:
    """The delayed grid -> aligned codes: (K, positions) -> (K, frames), (takes, K, positions) -> (takes, K,
    frames)."""
    return torch.stack([grid[..., k, 1 + d:1 + d + frames] for k, d in enumerate(delays)], dim=-2)


def rows_for(takes: torch.Tensor, guided: bool) -> torch.Tensor:
    """Per-take tensors (takes, ...) -> the decoder's rows: the takes under the condition, then (guided)
    the same takes under the null condition."""
    return torch.cat([takes, takes]) if guided else takes


ProgressCallback = Callable[[int, int], None]  # (done, total): the one progress type, in steps or tokens


class CudaGraphs:
    """The CUDA calls a capture needs, all on one device (streams and the graph's generator state are made
    on the model's device, not the current one). A test can put a CPU stand-in in its place."""

    def __init__(self, device: torch.device):
        self.device = device

    def device_context(self):
        """torch.cuda.device(...) for the decoder's device."""
        return torch.cuda.device(self.device)

    def new_graph(self, generator: torch.Generator | None):
        """An empty torch.cuda.CUDAGraph."""
        graph = torch.cuda.CUDAGraph()
        if generator is not None:
            graph.register_generator_state(generator)  # replays draw fresh numbers from the request's generator
        return graph

    def side_stream(self):
        """A stream to capture on, apart from the default one."""
        return torch.cuda.Stream(device=self.device)

    def current_stream(self):
        """The stream work is queued on now."""
        return torch.cuda.current_stream(self.device)

    def use_stream(self, stream):
        """torch.cuda.stream(...): queue work on `stream` inside the block."""
        return torch.cuda.stream(stream)

    def capture(self, graph, stream, pool=None):
        """torch.cuda.graph(...): record the block into `graph`, in `pool` (None: a new private pool).
        Sharing is safe here: a step's graph leaves nothing in the pool that another graph reads."""
        return torch.cuda.graph(graph, pool=pool, stream=stream)

    def pool_of(self, graph):
        """The memory pool `graph` was captured in, for the next capture to share."""
        return graph.pool()

    def capturing(self) -> bool:
        """Whether a capture is under way on the current stream."""
        return torch.cuda.is_current_stream_capturing()

    def synchronize(self) -> None:
        """Wait for the device's queued work."""
        torch.cuda.synchronize(self.device)


class WindowDecoder:
    """Decodes a request's windows: prefill, then a fixed-shape step per position (on CUDA, one graph per
    length bucket). The windows share one cache and its graphs while their shapes agree."""

    def __init__(self, decoder: Decoder, use_cuda_graph: bool | None = None, static_steps: bool = False,
                 graphs: CudaGraphs | None = None, strict: bool | None = None, timed: bool = False,
                 bucket: int = BUCKET, capacity: int | None = None, share_prefix: bool = True):
        """use_cuda_graph: default on CUDA unless REMIXER_CUDA_GRAPHS=0. static_steps: without a graph, still
        run the graph's step (device-tensor positions, bucketed static cache) eagerly; what the CPU tests check
        it with. strict: a failed capture raises (default: REMIXER_CUDA_GRAPHS=strict). timed: synchronise at
        the edges of prefill, capture and steps and record their seconds in `timings` (benchmarks).
        bucket: positions per length bucket (0: every static step reads the whole cache, for benchmarks).
        capacity: grid positions the cache holds at least (default: the first window's). share_prefix: with
        several takes, static steps read one copy of the condition prefix per guidance half (False: every
        row's own copy, for benchmarks)."""
        self.decoder = decoder
        mode = graph_mode()
        on_cuda = decoder.device.type == "cuda"
        self.use_cuda_graph = (on_cuda and mode != "0") if use_cuda_graph is None else use_cuda_graph
        self.strict = (mode == "strict") if strict is None else strict
        self.static_steps = static_steps
        self.graphs = graphs or (CudaGraphs(decoder.device) if on_cuda else None)
        self.timed = timed
        self.bucket = bucket
        self.capacity = capacity
        self.share_prefix = share_prefix
        self.modes: list[str] = []  # per window decoded: GRAPH, or EAGER (with the capture error if one failed)
        self.timings: list[dict[str, float]] = []  # per window, when timed
        self.captures = 0  # graphs captured so far (one per bucket a request reaches, not one per window)
        self._state: _StepState | None = None  # kept between windows: the cache, the buffers, the graphs

    @torch.inference_mode()
    def decode(self, prefix: torch.Tensor, plan: WindowPlan, settings: Sampling,
               generator: torch.Generator | None, progress: ProgressCallback | None = None,
               steps: torch.Tensor | None = None) -> torch.Tensor:
        """prefix (1 or 2, C, D): the condition (and the null row under guidance), shared by every take of
        `plan`. steps (1 or 2, positions, D), MusiConGen only: what each grid position's input gets added
        (its frame's chord + beat embedding; the null row's zeros), read on the device at the step's
        position. Returns aligned codes (takes, K, frames); all takes are decoded together, one batch of rows."""
        on_device = self.graphs.device_context() if self.graphs is not None else contextlib.nullcontext()
        with on_device:  # every allocation, stream and kernel of the window on the model's device
            return self._decode(prefix, plan, settings, generator, progress, sums=steps)

    def _decode(self, prefix, plan, settings, generator, progress, sums=None) -> torch.Tensor:
        decoder = self.decoder
        guided = settings.guided
        if prefix.shape[0] != (2 if guided else 1):
            raise ValueError(f"a {'guided' if guided else 'plain'} window needs {2 if guided else 1} prefix rows")
        clock = _Clock(self.timed, self.graphs)
        takes, positions = plan.takes, plan.grid.shape[2]
        # One condition for every take: the condition rows, then (guided) the null rows.
        prefix = torch.cat([part.expand(takes, -1, -1) for part in prefix.split(1)])
        if sums is not None:
            sums = torch.cat([part.expand(takes, -1, -1) for part in sums.split(1)]).to(decoder.dtype)
        state = self._window_state(prefix.shape, plan, sums, (settings, generator))

        # Prefill, all rows in one forward: the condition and every grid position before the first to generate.
        tokens = rows_for(state.grid[:, :, :plan.first], guided)
        embedded = decoder.embed(tokens)
        before = None if sums is None else state.sums[:, :plan.first]
        if before is not None:
            embedded = embedded + before
        hidden = torch.cat([prefix.to(decoder.dtype), embedded], dim=1)
        hidden = hidden + state.table[:hidden.shape[1]]
        out = decoder.forward(hidden, 0, state.cache, causal=True, condition=before)
        state.logits.copy_(decoder.logits(out[:, -1]))
        self._choose(state, settings, generator, guided, eager=True)
        eager = not (self.static_steps or self.use_cuda_graph)
        if takes > 1 and self.share_prefix and not eager:
            state.cache.share_prefix(state.prefix_length, 2 if guided else 1)
        clock.lap("prefill")

        # Step n (from 1) feeds grid position first + n - 1: its bucket is known here, without the device.
        fed = range(state.prefix_length + plan.first, state.prefix_length + positions - 1)
        spans = [span_for(index, state.cache.length, self.bucket) for index in fed]
        replays, mode = None, EAGER
        if spans and self.use_cuda_graph:
            replays, mode = self._graphs_for(state, spans, settings, generator, guided)
        clock.lap("capture")
        self.modes.append(mode)
        total = len(spans) + 1
        if progress is not None:
            progress(1, total)
        for done, span in enumerate(spans, 1):
            if replays is not None:
                replays[span].replay()
            else:
                self._step(state, settings, generator, guided, eager, span)
            if progress is not None and (done % PROGRESS_EVERY == 0 or done == len(spans)):
                progress(done + 1, total)  # positions chosen so far, the prefill's one included
        clock.lap("steps")
        if self.timed:
            self.timings.append({**clock.seconds, "step_count": len(spans)})
        return aligned(state.grid[:, :, :positions], decoder.delays, plan.frames)

    def _window_state(self, rows_shape: torch.Size, plan: WindowPlan, sums: torch.Tensor | None,
                      sampling: tuple) -> "_StepState":
        """The state this window decodes in: the last window's (its cache, buffers and graphs) when the shapes
        agree and it holds the window, else a new one. The grid is copied in; positions past the window stay
        fixed padding, never reached. Graphs record the sampling settings and generator: new ones, new graphs."""
        decoder, state = self.decoder, self._state
        rows, prefix_length = rows_shape[0], rows_shape[1]
        positions = plan.grid.shape[2]
        fits = (state is not None and state.cache.rows == rows and state.prefix_length == prefix_length
                and state.grid.shape[2] >= positions and state.grid.shape[0] == plan.takes
                and (sums is None) == (state.sums is None)
                and (sums is None or sums.shape == state.sums.shape))
        if not fits:
            capacity = max(positions, self.capacity or 0)
            length = prefix_length + capacity
            grid = torch.full((plan.takes, plan.grid.shape[1], capacity), SPECIAL, dtype=torch.long,
                              device=plan.grid.device)
            fixed = torch.ones((plan.grid.shape[1], capacity), dtype=torch.bool, device=plan.fixed.device)
            logits = torch.zeros((rows, decoder.codebooks, decoder.heads_out.shape[1]), device=decoder.device)
            state = _StepState(grid, fixed, torch.zeros((), dtype=torch.long, device=decoder.device), 0,
                               prefix_length, decoder.positional(length), KVCache(decoder, rows, length), logits,
                               None if sums is None else torch.empty_like(sums))
            self._state = state
        if state.sampling is None or not _same_sampling(state.sampling, sampling):
            state.replays, state.failure, state.pool, state.sampling = {}, None, None, sampling
        state.grid.fill_(SPECIAL)
        state.grid[:, :, :positions] = plan.grid
        state.fixed.fill_(True)
        state.fixed[:, :positions] = plan.fixed
        state.position.fill_(plan.first)
        state.at = plan.first
        if sums is not None:
            state.sums.copy_(sums)
        return state

    def _graphs_for(self, state: "_StepState", spans: list[int], settings: Sampling, generator, guided: bool):
        """A replayable graph for every bucket in `spans`, capturing those the request has not captured yet:
        ({span: graph}, GRAPH), or (None, EAGER: reason) once a capture failed and the mode allows falling back."""
        if state.failure is None:
            for span in sorted(set(spans) - set(state.replays)):
                graph, failure = self._graph(state, settings, generator, guided, span)
                if failure is not None:
                    state.failure = failure
                    break
                state.replays[span] = graph
                self.captures += 1
        if state.failure is not None:
            return None, f"{EAGER} (capture failed: {state.failure})"
        return state.replays, GRAPH

    def _choose(self, state: "_StepState", settings: Sampling, generator, guided: bool,
                eager: bool) -> None:
        """Sample the grid position being chosen from `state.logits`, keep fixed values, write it to the grid."""
        logits = state.logits  # (rows, K, card)
        if guided:
            condition, null = logits.chunk(2)
            logits = null + (condition - null) * settings.classifier_free_guidance
        drawn = sample(logits, settings, generator)  # (takes, K): one draw sequence for all takes
        if eager:
            p = state.at
            state.grid[:, :, p] = torch.where(state.fixed[:, p], state.grid[:, :, p], drawn)
            return
        position = state.position[None]
        column = state.grid.index_select(2, position)[..., 0]
        fixed = state.fixed.index_select(1, position)[:, 0]
        state.grid.index_copy_(2, position, torch.where(fixed, column, drawn)[..., None])

    def _step(self, state: "_StepState", settings: Sampling, generator, guided: bool,
              eager: bool, span: int | None = None) -> None:
        """Feed the last chosen position, compute the next position's logits, sample it.

        eager: positions as Python ints (the CPU's fast path, reading the cache up to the position);
        otherwise as a device tensor advanced on the device, reading the cache's first `span` positions,
        so a captured graph replays it.
        """
        decoder = self.decoder
        if eager:
            column = state.grid[:, :, state.at:state.at + 1]
            index = state.prefix_length + state.at
            positional = state.table[index:index + 1]
        else:
            column = state.grid.index_select(2, state.position[None])  # (takes, K, 1)
            index = state.prefix_length + state.position
            positional = state.table.index_select(0, index[None])
        hidden = decoder.embed(rows_for(column, guided)) + positional
        added = None
        if state.sums is not None:  # MusiConGen: the fed position's chord + beat, from the device buffer
            added = (state.sums[:, state.at:state.at + 1] if eager
                     else state.sums.index_select(1, state.position[None]))
            hidden = hidden + added
        if eager:
            last = decoder.step_eager(hidden[:, 0], index, state.cache, None if added is None else added[:, 0])
        else:
            last = decoder.forward(hidden, index, state.cache, causal=False, condition=added, span=span)[:, -1]
        state.logits.copy_(decoder.logits(last))
        if eager:
            state.at += 1
        else:
            state.position += 1
        self._choose(state, settings, generator, guided, eager)

    def _graph(self, state: "_StepState", settings: Sampling, generator, guided: bool, span: int):
        """The step reading `span` cache positions, captured as a CUDA graph (state tensors are its static
        buffers; every bucket's graph shares the memory pool): (graph, None), or (None, reason) when capture
        fails and the mode allows the eager fallback.

        Whatever happens, the decode state (grid, position) and the generator are as they were before the
        warm-up: the warm-up step really runs (it advances the position and draws random numbers) and
        capture reserves random numbers; restoring both makes the graph path and the eager path give the
        same tokens for a seed. The cache needs no restoring: the first real step rewrites the slot the
        warm-up wrote, and a wider bucket's warm-up masks what lies past the position.
        """
        graphs = self.graphs
        saved_grid, saved_position = state.grid.clone(), state.position.clone()
        saved_rng = generator.get_state() if generator is not None else None
        with _CAPTURE_LOCK:
            try:
                graph = graphs.new_graph(generator)
                side = graphs.side_stream()
                side.wait_stream(graphs.current_stream())
                with graphs.use_stream(side):  # warm-up on a side stream, as capture requires
                    self._step(state, settings, generator, guided, False, span)
                graphs.current_stream().wait_stream(side)
                with graphs.capture(graph, side, state.pool):
                    self._step(state, settings, generator, guided, False, span)
                state.pool = state.pool if state.pool is not None else graphs.pool_of(graph)
                failure = None
            except torch.cuda.OutOfMemoryError:
                failure = "out of memory"
                raise  # the pipeline frees memory and tells the user what to try
            except Exception as error:  # noqa: BLE001 - any other capture failure: decided below
                failure = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            finally:
                state.grid.copy_(saved_grid)
                state.position.copy_(saved_position)
                if saved_rng is not None:
                    generator.set_state(saved_rng)
        if failure is None:
            return graph, None
        if self.strict:
            raise DecodingError(f"CUDA graph capture failed ({failure}) and {GRAPHS_ENV}=strict; "
                                f"set {GRAPHS_ENV}=1 to fall back to eager decoding")
        if graphs.capturing():
            raise DecodingError(f"CUDA graph capture failed ({failure}) and left the GPU stream capturing; "
                                "this process cannot decode any more: restart it")
        graphs.synchronize()
        log.warning("CUDA graph capture failed (%s); decoding eagerly", failure)
        return None, failure


def _same_sampling(recorded: tuple, sampling: tuple) -> bool:
    """Whether graphs recorded with (settings, generator) replay for these: equal settings, the same generator."""
    return recorded[0] == sampling[0] and recorded[1] is sampling[1]


def span_for(index: int, length: int, bucket: int = BUCKET) -> int:
    """Cache positions the static step at absolute position `index` reads: to the end of its bucket (at most
    bucket - 1 past the position), never past the cache; bucket 0 reads the whole cache."""
    if bucket <= 0:
        return length
    return min(length, (index // bucket + 1) * bucket)


class _Clock:
    """Seconds per phase of a window, synchronising the device at each edge (only when timed)."""

    def __init__(self, enabled: bool, graphs: CudaGraphs | None):
        self.graphs = graphs
        self.enabled = enabled
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        """Seconds since the last lap, added to `name` (the device synchronised first when timed)."""
        if not self.enabled:
            return
        if self.graphs is not None:
            self.graphs.synchronize()
        now = time.perf_counter()
        self.seconds[name] = now - self.last
        self.last = now


@dataclass
class _StepState:
    grid: torch.Tensor  # (takes, K, capacity): the window's grid, then fixed padding
    fixed: torch.Tensor
    position: torch.Tensor  # 0-d long on the device: the grid position chosen last (graph steps)
    at: int  # the same, as a Python int (eager steps)
    prefix_length: int
    table: torch.Tensor
    cache: KVCache
    logits: torch.Tensor  # (rows, K, card) float32, the logits for the position after `position`
    sums: torch.Tensor | None = None  # (rows, positions, D): MusiConGen's per-position sums; None otherwise
    replays: dict = field(default_factory=dict)  # span -> captured graph, for the sampling below
    sampling: tuple | None = None  # (settings, generator) the graphs were recorded with
    failure: str | None = None  # why a capture failed; the rest of the request decodes eagerly
    pool: object = None  # the graphs' shared memory pool


def kv_cache_bytes(layers: int, width: int, rows: int, positions: int, bytes_per_value: int = 2) -> int:
    """Keys + values of every layer for `positions`: what a window's static cache holds."""
    return 2 * layers * rows * positions * width * bytes_per_value
