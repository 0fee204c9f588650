"""The state a window decodes in, and one step over it: feed the last chosen position, compute the next
position's logits, sample it, keep the delay pattern's fixed values. Positions are Python ints on the eager
path (the CPU's fast path) or a device tensor advanced on the device (the static step a CUDA graph records)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from remixer.decoding.cache import KVCache
from remixer.decoding.decoder import Decoder
from remixer.decoding.plan import SPECIAL, WindowPlan, rows_for
from remixer.decoding.sampling import Sampling, sample


@dataclass
class StepState:
    """A request's decode buffers, kept from window to window while their shapes agree (graphs keep them)."""

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

    @classmethod
    def allocate(cls, decoder: Decoder, rows: int, prefix_length: int, plan: WindowPlan, capacity: int,
                 sums: torch.Tensor | None) -> StepState:
        """New buffers for `rows` decoder rows after a prefix of `prefix_length`, `capacity` grid positions."""
        length = prefix_length + capacity
        codebooks = plan.grid.shape[1]
        grid = torch.full((plan.takes, codebooks, capacity), SPECIAL, dtype=torch.long, device=plan.grid.device)
        fixed = torch.ones((codebooks, capacity), dtype=torch.bool, device=plan.fixed.device)
        logits = torch.zeros((rows, decoder.codebooks, decoder.heads_out.shape[1]), device=decoder.device)
        return cls(grid, fixed, torch.zeros((), dtype=torch.long, device=decoder.device), 0, prefix_length,
                   decoder.positional(length), KVCache(decoder, rows, length), logits,
                   None if sums is None else torch.empty_like(sums))

    def holds(self, rows: int, prefix_length: int, plan: WindowPlan, sums: torch.Tensor | None) -> bool:
        """Whether this window fits these buffers (same rows, prefix and condition shape, no more positions)."""
        return (self.cache.rows == rows and self.prefix_length == prefix_length
                and self.grid.shape[2] >= plan.grid.shape[2] and self.grid.shape[0] == plan.takes
                and (sums is None) == (self.sums is None)
                and (sums is None or sums.shape == self.sums.shape))

    def load(self, plan: WindowPlan, sums: torch.Tensor | None, sampling: tuple) -> None:
        """Copy the window in; positions past it stay fixed padding, never reached. Graphs record the sampling
        settings and generator: new ones, new graphs."""
        if self.sampling is None or not same_sampling(self.sampling, sampling):
            self.replays, self.failure, self.pool, self.sampling = {}, None, None, sampling
        positions = plan.grid.shape[2]
        self.grid.fill_(SPECIAL)
        self.grid[:, :, :positions] = plan.grid
        self.fixed.fill_(True)
        self.fixed[:, :positions] = plan.fixed
        self.position.fill_(plan.first)
        self.at = plan.first
        if sums is not None:
            self.sums.copy_(sums)


def same_sampling(recorded: tuple, sampling: tuple) -> bool:
    """Whether graphs recorded with (settings, generator) replay for these: equal settings, the same generator."""
    return recorded[0] == sampling[0] and recorded[1] is sampling[1]


def choose(state: StepState, settings: Sampling, generator: torch.Generator | None, guided: bool,
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


def advance(decoder: Decoder, state: StepState, settings: Sampling, generator: torch.Generator | None,
            guided: bool, eager: bool, span: int | None = None) -> None:
    """Feed the last chosen position, compute the next position's logits, sample it.

    eager: positions as Python ints (the CPU's fast path, reading the cache up to the position);
    otherwise as a device tensor advanced on the device, reading the cache's first `span` positions,
    so a captured graph replays it.
    """
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
    choose(state, settings, generator, guided, eager)
