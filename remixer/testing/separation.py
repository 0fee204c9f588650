"""A random htdemucs checkpoint in demucs's own package format (tests and benchmarks only)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import torch

from remixer import weights
from remixer.separation import COMPONENT, SAMPLE_RATE, STEM_NAMES


def write_checkpoint(path: str | Path, model: torch.nn.Module) -> Path:
    """Save a demucs model as demucs' own `states.serialize_model` does: the class by reference, its
    constructor arguments (segment a Fraction), the state in half precision, the training config as a dict."""
    import demucs_infer.compat  # noqa: F401  (registers the demucs.* module names the class is pickled under)
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
                    "training_args": TRAINING_ARGS}, path)
    finally:
        HTDemucs.__module__ = original
    return path


TINY = dict(channels=4, t_layers=1, t_heads=2, dconv_comp=2)
# A few entries of the training config demucs stores beside the model (OmegaConf.to_container: plain data).
TRAINING_ARGS = {"seed": 42, "dset": {"name": "musdb", "segment": 11, "samplerate": 44100, "channels": 2},
                 "optim": {"lr": 3e-4, "optim": "adam"}, "weights": [1.0, 1.0, 1.0, 1.0]}


def build_htdemucs(full_size: bool = False) -> torch.nn.Module:
    """htdemucs's architecture (26.9 M parameters), or a tiny one for tests."""
    from demucs_infer.htdemucs import HTDemucs

    # segment as the published file stores it: Fraction(39, 5) seconds.
    return HTDemucs(list(STEM_NAMES), samplerate=SAMPLE_RATE, segment=Fraction(39, 5), **({} if full_size else TINY))


def write_random_checkpoint(directory: str | Path, seed: int = 0, full_size: bool = False) -> list[Path]:
    """A random htdemucs in demucs' own checkpoint format (klass, args, kwargs, state)."""
    torch.manual_seed(seed)
    (file,) = weights.files_of([COMPONENT])
    return [write_checkpoint(Path(directory) / file.name, build_htdemucs(full_size))]


def checkpoint_in(weights_dir: str | Path) -> Path:
    """The htdemucs file of a weights folder (as the Remixer resolves it)."""
    (path,) = weights.paths_of(COMPONENT, weights_dir, offline=True)
    return path
