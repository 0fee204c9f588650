"""Random All-In-One folds in the package's own checkpoint format (tests and benchmarks only)."""

from __future__ import annotations

from pathlib import Path

import torch

from remixer import weights
from remixer.rhythm import COMPONENT


def write_random_checkpoints(directory: str | Path, seed: int = 0) -> list[Path]:
    """Eight random folds at the real size (300 k parameters each) in All-In-One's format."""
    from allin1_infer.config import Config, HarmonixConfig
    from allin1_infer.models.allinone import AllInOne
    from omegaconf import OmegaConf

    written = []
    for fold, file in enumerate(weights.files_of([COMPONENT])):
        torch.manual_seed(seed + fold)
        config = OmegaConf.structured(Config(data=HarmonixConfig(), fold=fold, best_threshold_beat=0.19,
                                             best_threshold_downbeat=0.19))
        model = AllInOne(config)
        path = Path(directory) / file.name
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": OmegaConf.to_container(config, resolve=True), "state_dict": model.state_dict()}, path)
        written.append(path)
    return written
