"""`WindowDecoder`: a request's windows, each a prefill and then a fixed-shape step per position (on CUDA one
graph per length bucket, picked from the step number, which the host knows without asking the device)."""

from __future__ import annotations

import contextlib
import time
from typing import Callable

import torch

from remixer.decoding.cache import BUCKET, span_for
from remixer.decoding.decoder import Decoder
from remixer.decoding.graphs import EAGER, GRAPH, CudaGraphs, capture, graph_mode
from remixer.decoding.plan import WindowPlan, aligned, rows_for
from remixer.decoding.sampling import Sampling
from remixer.decoding.step import StepState, advance, choose

PROGRESS_EVERY = 25  # steps between progress reports (the host never waits on the device in between)
ProgressCallback = Callable[[int, int], None]  # (done, total): the one progress type, in steps or tokens


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
        self._state: StepState | None = None  # kept between windows: the cache, the buffers, the graphs

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
        choose(state, settings, generator, guided, eager=True)
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
                      sampling: tuple) -> StepState:
        """The state this window decodes in: the last window's (its cache, buffers and graphs) when it holds
        the window, else a new one, with the window copied in."""
        rows, prefix_length = rows_shape[0], rows_shape[1]
        state = self._state
        if state is None or not state.holds(rows, prefix_length, plan, sums):
            capacity = max(plan.grid.shape[2], self.capacity or 0)
            state = self._state = StepState.allocate(self.decoder, rows, prefix_length, plan, capacity, sums)
        state.load(plan, sums, sampling)
        return state

    def _graphs_for(self, state: StepState, spans: list[int], settings: Sampling, generator, guided: bool):
        """A replayable graph for every bucket in `spans`, capturing those the request has not captured yet:
        ({span: graph}, GRAPH), or (None, EAGER: reason) once a capture failed and the mode allows falling back."""
        if state.failure is None:
            for span in sorted(set(spans) - set(state.replays)):
                graph, failure = capture(
                    self.graphs, state, generator,
                    lambda span=span: self._step(state, settings, generator, guided, False, span), self.strict)
                if failure is not None:
                    state.failure = failure
                    break
                state.replays[span] = graph
                self.captures += 1
        if state.failure is not None:
            return None, f"{EAGER} (capture failed: {state.failure})"
        return state.replays, GRAPH

    def _step(self, state: StepState, settings: Sampling, generator, guided: bool, eager: bool,
              span: int | None = None) -> None:
        """One step of this window (a seam the capture tests route through their stand-in)."""
        advance(self.decoder, state, settings, generator, guided, eager, span)


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
