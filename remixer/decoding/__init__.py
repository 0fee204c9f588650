"""Our own MusicGen-Chord decode loop: a static KV cache, one forward per step, sampling on the device.

Eager autoregressive decoding is bound by the host (audiocraft issue #192, "MusicGen on
A100/A10G/3090 is single core CPU bound"): each step of transformers' `generate()` builds cache objects,
masks and logits processors in Python. Here a window is decoded by a plain loop over the converted weights
(the transformers model's own tensors, not a copy). One module per idea, each changeable alone:

- `decoder`: the fused decoder stack and its two forwards: the prefill and the static step (the one a CUDA
  graph records) as one batched forward, and the CPU's eager one-position step with as few operations as
  possible. The condition prefix (chroma + text, and the prompt of a continuation window) goes through it
  once; every step is one forward of one position for both classifier-free guidance rows.
- `cache`: the static KV cache, allocated once per request; the length buckets: the static step reads the
  cache only up to the end of the `BUCKET` that holds the step's position, each bucket one fixed shape;
  with several takes it reads the condition prefix once per guidance half (every take's rows share it) and
  each row's own positions after it.
- `plan`: one window's delayed grid (below), which positions are fixed, aligned codes back out of it.
- `sampling`: top-k / top-p / greedy on the device with the request's `torch.Generator`, no host sync.
- `step`: the state a window decodes in and one step over it (feed a position, sample the next, keep the
  delay pattern's fixed positions); every tensor keeps its shape from step to step.
- `graphs`: CUDA-graph capture, one graph per bucket over the same buffers, memory pool and generator
  (`REMIXER_CUDA_GRAPHS`: 1, the default, falls back to the same step run eagerly if capture fails, with a
  log line; 0 never captures; strict makes a failed capture an error).
- `precision`: the CPU decoder's linear layers in float32, bfloat16 or int8 (`Decoder(..., precision=...)`).
- `loop`: `WindowDecoder`, a request's windows: prefill, capture, the steps (the graph picked from the step
  number, which the host knows without asking the device), progress, timings. A request's windows share the
  cache and the graphs (the first window is the largest); each records how it was decoded (`modes`).

The delayed grid: position 0 is BOS for every codebook; codebook k holds frame f at position
1 + f + delay(k), delay(k) = k // channels (stereo interleaves left/right codebooks). Positions outside a
codebook's frames hold the special token (2048), as audiocraft's pattern and transformers' delay mask do.
"""

from remixer.decoding import precision
from remixer.decoding.cache import BUCKET, KVCache, kv_cache_bytes, span_for
from remixer.decoding.decoder import Decoder
from remixer.decoding.graphs import EAGER, GRAPH, GRAPH_MODES, GRAPHS_ENV, CudaGraphs, DecodingError, graph_mode
from remixer.decoding.loop import PROGRESS_EVERY, ProgressCallback, WindowDecoder
from remixer.decoding.plan import SPECIAL, WindowPlan, aligned, plan_window, rows_for
from remixer.decoding.sampling import Sampling, sample

__all__ = [
    "BUCKET", "EAGER", "GRAPH", "GRAPHS_ENV", "GRAPH_MODES", "PROGRESS_EVERY", "SPECIAL", "CudaGraphs", "Decoder",
    "DecodingError", "KVCache", "ProgressCallback", "Sampling", "WindowDecoder", "WindowPlan", "aligned",
    "graph_mode", "kv_cache_bytes", "plan_window", "precision", "rows_for", "sample", "span_for",
]
