"""Random BTC checkpoints at the real shapes in the official format (tests and benchmarks only)."""

from __future__ import annotations

from pathlib import Path

import torch

from btc import BTC, write_checkpoint
from remixer.weights import files_of


def write_random_checkpoints(directory: str | Path, seed: int = 0) -> list[Path]:
    """Full-size random BTC checkpoints (both vocabularies) under the manifest's names.

    BTC is small (3 M parameters, 12 MB), so the random checkpoints have the
    real shapes; mean/std are those of typical log-CQT features.
    """
    torch.manual_seed(seed)
    written = []
    for component, classes in (("btc-large-voca", 170), ("btc-majmin", 25)):
        (file,) = files_of([component])
        written.append(write_checkpoint(Path(directory) / file.name, BTC(classes), mean=-6.66, std=3.97))
    return written
