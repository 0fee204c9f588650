"""One window's delayed grid: where the prompt, BOS and padding sit, which positions are generated."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SPECIAL = 2048  # BOS and padding in the delayed grid (the codebook size)


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
