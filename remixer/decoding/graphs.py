"""CUDA-graph capture of the static step: one graph per length bucket, over the same buffers, memory pool and
generator. A failed capture leaves nothing behind (grid, position and generator restored) and, unless
REMIXER_CUDA_GRAPHS=strict, the request goes on eagerly."""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Callable

import torch

from remixer.errors import RemixerError

if TYPE_CHECKING:
    from remixer.decoding.step import StepState

log = logging.getLogger(__name__)

GRAPHS_ENV = "REMIXER_CUDA_GRAPHS"
GRAPH_MODES = ("1", "0", "strict")
GRAPH, EAGER = "cuda-graph", "eager"
# One capture at a time in the process: a capture on one thread is invalidated by another thread's
# CUDA work on the capturing stream's device (torch.cuda.graph's documentation).
CAPTURE_LOCK = threading.Lock()


class DecodingError(RemixerError):
    """The decode loop cannot run as configured, explained."""


def graph_mode() -> str:
    """REMIXER_CUDA_GRAPHS: "1" (default: graphs, eager fallback), "0" (never capture), "strict"."""
    value = os.environ.get(GRAPHS_ENV, "1").strip().lower() or "1"
    if value not in GRAPH_MODES:
        raise DecodingError(f"{GRAPHS_ENV} must be 1 (graphs, eager fallback), 0 (no graphs) or strict "
                            f"(a failed capture is an error); got {value!r}")
    return value


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


def capture(graphs: CudaGraphs, state: StepState, generator: torch.Generator | None, step: Callable[[], None],
            strict: bool):
    """`step` (the static step reading one bucket; state tensors are its static buffers) captured as a CUDA
    graph in the state's shared memory pool: (graph, None), or (None, reason) when capture fails and the mode
    allows the eager fallback.

    Whatever happens, the decode state (grid, position) and the generator are as they were before the
    warm-up: the warm-up step really runs (it advances the position and draws random numbers) and
    capture reserves random numbers; restoring both makes the graph path and the eager path give the
    same tokens for a seed. The cache needs no restoring: the first real step rewrites the slot the
    warm-up wrote, and a wider bucket's warm-up masks what lies past the position.
    """
    saved_grid, saved_position = state.grid.clone(), state.position.clone()
    saved_rng = generator.get_state() if generator is not None else None
    with CAPTURE_LOCK:
        try:
            graph = graphs.new_graph(generator)
            side = graphs.side_stream()
            side.wait_stream(graphs.current_stream())
            with graphs.use_stream(side):  # warm-up on a side stream, as capture requires
                step()
            graphs.current_stream().wait_stream(side)
            with graphs.capture(graph, side, state.pool):
                step()
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
    if strict:
        raise DecodingError(f"CUDA graph capture failed ({failure}) and {GRAPHS_ENV}=strict; "
                            f"set {GRAPHS_ENV}=1 to fall back to eager decoding")
    if graphs.capturing():
        raise DecodingError(f"CUDA graph capture failed ({failure}) and left the GPU stream capturing; "
                            "this process cannot decode any more: restart it")
    graphs.synchronize()
    log.warning("CUDA graph capture failed (%s); decoding eagerly", failure)
    return None, failure
