"""How far a low-precision CPU decoder's logits are from float32's (tests and benchmarks/bench_precision.py).

Teacher-forced: float32 decodes greedily under classifier-free guidance and records its guided logits; every
other precision is fed exactly those tokens, position by position, and its guided logits are compared with
float32's at each step: the relative error (Frobenius norm of the difference over float32's) and whether the
argmax (greedy's choice) agrees, per codebook."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from remixer import decoding
from remixer.musicgen import CARD


@dataclass(frozen=True)
class Agreement:
    relative_error: float  # mean over steps of |logits - float32's| / |float32's|
    worst_error: float  # the largest step's
    greedy_agreement: float  # share of (step, codebook) argmaxes equal to float32's


def guided(logits: torch.Tensor, cfg: float) -> torch.Tensor:
    """(2, K, card) conditional and null rows -> (K, card), mixed as the decode loop does; one row: itself."""
    if logits.shape[0] == 1:
        return logits[0].float()
    condition, null = logits.float().chunk(2)
    return (null + (condition - null) * cfg)[0]


@torch.inference_mode()
def forced_logits(decoder: decoding.Decoder, prefix: torch.Tensor, steps: int, cfg: float = 3.0,
                  columns: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Guided logits (steps, K, card) of `steps` positions after BOS, and the columns fed (K, steps): `columns`
    when given (teacher forcing), else each step's greedy choice. prefix: (2, C, D), condition and null rows
    (or one row: no guidance)."""
    rows, length = prefix.shape[0], prefix.shape[1]
    cache = decoding.KVCache(decoder, rows, length + steps + 1)
    table = decoder.positional(cache.length)
    column = torch.full((decoder.codebooks, 1), CARD, dtype=torch.long)  # BOS
    hidden = torch.cat([prefix.to(decoder.dtype), decoder.embed(column.expand(rows, -1, -1))], dim=1)
    out = decoder.forward(hidden + table[:hidden.shape[1]], 0, cache, causal=True)[:, -1]
    collected, fed = [], []
    for step in range(steps):
        logits = guided(decoder.logits(out), cfg)
        collected.append(logits)
        column = columns[:, step:step + 1] if columns is not None else logits.argmax(dim=-1)[:, None]
        fed.append(column)
        if step + 1 == steps:
            break
        index = length + 1 + step
        embedded = decoder.embed(column.expand(rows, -1, -1))[:, 0] + table[index]
        out = decoder.step_eager(embedded, index, cache)
    return torch.stack(collected), torch.cat(fed, dim=1)


def compare(reference: torch.Tensor, other: torch.Tensor) -> Agreement:
    """Two (steps, K, card) logit stacks: the relative error per step and the greedy agreement."""
    errors = (other - reference).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1)
    agree = (other.argmax(dim=-1) == reference.argmax(dim=-1)).float().mean()
    return Agreement(float(errors.mean()), float(errors.max()), float(agree))


def against_float32(model, prefix: torch.Tensor, steps: int, precisions: list[str], cfg: float = 3.0
                    ) -> dict[str, Agreement]:
    """Each precision's decoder of `model` (float32 as loaded) teacher-forced on float32's greedy tokens."""
    reference, columns = forced_logits(decoding.Decoder(model), prefix, steps, cfg)
    return {precision: compare(reference, forced_logits(decoding.Decoder(model, precision=precision), prefix, steps,
                                                        cfg, columns)[0])
            for precision in precisions}
