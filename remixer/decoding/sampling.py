"""Choosing a token from logits on the device: greedy, top-k or top-p, with the request's generator."""

from __future__ import annotations

import torch

from remixer.musicgen import Sampling  # the settings, defined torch-free beside the models' other facts


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
