"""The static KV cache a request's windows decode in, and the length buckets its static step reads."""

from __future__ import annotations

from typing import Protocol

import torch

# Cache positions per length bucket. Smaller buckets read less per step but capture more graphs: 256 reads
# at most 255 positions past the live ones (under 15% of a 30 s window's cache) with 7 graphs per window.
BUCKET = 256


class DecoderShape(Protocol):
    """What a cache takes from the decoder it serves (`decoder.Decoder`): the layers, the heads, where."""

    device: torch.device
    dtype: torch.dtype
    cache_dtype: torch.dtype
    heads: int
    head_dim: int
    layers: list


class KVCache:
    """Per layer: keys stored transposed (rows, heads, head_dim, length) and values (rows, heads, length,
    head_dim), allocated once per window."""

    def __init__(self, decoder: DecoderShape, rows: int, length: int):
        self.length = length
        self.rows = rows
        options = dict(device=decoder.device, dtype=decoder.cache_dtype)
        # Every layer's keys (and values) in one tensor: the eager step narrows all layers to the live
        # positions with one operation per step instead of one per layer (host time on the CPU).
        count, batch = len(decoder.layers), rows * decoder.heads
        keys = torch.zeros((count, rows, decoder.heads, decoder.head_dim, length), **options)
        values = torch.zeros((count, rows, decoder.heads, length, decoder.head_dim), **options)
        self.layers = list(zip(keys.unbind(0), values.unbind(0)))
        # The same memory as (rows * heads) batches, for the eager step's batched products.
        self.flat = (keys.view(count, batch, decoder.head_dim, length), values.view(count, batch, length,
                                                                                 decoder.head_dim))
        self.scratch = torch.zeros((batch, 1, length), **options)
        self.shared: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # see share_prefix
        self.shared_length = 0
        self.groups = 1

    def live(self, end: int) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], torch.Tensor]:
        """The eager step's reads up to position `end` (exclusive): every layer's keys (batch, head_dim, end)
        and values (batch, end, head_dim), and the scores' scratch (batch, 1, end); four operations in all."""
        keys, values = self.flat
        return keys.narrow(3, 0, end).unbind(0), values.narrow(2, 0, end).unbind(0), self.scratch.narrow(2, 0, end)

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


def span_for(index: int, length: int, bucket: int = BUCKET) -> int:
    """Cache positions the static step at absolute position `index` reads: to the end of its bucket (at most
    bucket - 1 past the position), never past the cache; bucket 0 reads the whole cache."""
    if bucket <= 0:
        return length
    return min(length, (index // bucket + 1) * bucket)


def kv_cache_bytes(layers: int, width: int, rows: int, positions: int, bytes_per_value: int = 2) -> int:
    """Keys + values of every layer for `positions`: what a window's static cache holds."""
    return 2 * layers * rows * positions * width * bytes_per_value
