"""A random htdemucs checkpoint in demucs's own package format (tests and benchmarks only)."""

from __future__ import annotations

from pathlib import Path

import torch

from remixer import weights
from remixer.separation import COMPONENT, SAMPLE_RATE, STEM_NAMES


def write_checkpoint(path: str | Path, model: torch.nn.Module) -> Path:
    """Save a demucs model as demucs's own serializer does (half-precision state, class by reference)."""
    import demucs_infer.compat  # noqa: F401
    from demucs_infer.htdemucs import HTDemucs

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args, kwargs = model._init_args_kwargs
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    # The published checkpoints name the class demucs.htdemucs.HTDemucs; write the same reference.
    original = HTDemucs.__module__
    HTDemucs.__module__ = "demucs.htdemucs"
    try:
        torch.save({"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": state,
                    "training_args": {}}, path)
    finally:
        HTDemucs.__module__ = original
    return path


TINY = dict(channels=4, t_layers=1, t_heads=2, dconv_comp=2)


def build_htdemucs(full_size: bool = False) -> torch.nn.Module:
    """htdemucs's architecture (26.9 M parameters), or a tiny one for tests."""
    from demucs_infer.htdemucs import HTDemucs

    return HTDemucs(list(STEM_NAMES), samplerate=SAMPLE_RATE, segment=7.8, **({} if full_size else TINY))


def write_random_checkpoint(directory: str | Path, seed: int = 0, full_size: bool = False) -> list[Path]:
    torch.manual_seed(seed)
    (file,) = weights.files_of([COMPONENT])
    return [write_checkpoint(Path(directory) / file.name, build_htdemucs(full_size))]
