"""Random All-In-One folds in the package's own checkpoint format (tests and benchmarks only)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from remixer import weights
from remixer.rhythm import COMPONENT


def write_random_checkpoints(directory: str | Path, seed: int = 0, config_as: str = "dict") -> list[Path]:
    """Eight random folds at the real size (300 k parameters each) in All-In-One's format.

    `config_as`: "dict" (the config as plain data) or "dictconfig" (a pickled OmegaConf DictConfig of
    All-In-One's structured config, its dataclasses named under the original package, allin1.config).
    """
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
        if config_as == "dict":
            torch.save({"config": OmegaConf.to_container(config, resolve=True), "state_dict": model.state_dict()},
                       path)
        elif config_as == "dictconfig":
            with _named_as_allin1():
                torch.save({"config": config, "state_dict": model.state_dict()}, path)
        else:
            raise ValueError(f"config_as must be 'dict' or 'dictconfig', got {config_as!r}")
        written.append(path)
    return written


@contextlib.contextmanager
def _named_as_allin1():
    """Pickle All-In-One's config dataclasses under the original package's module name (allin1.config)."""
    import sys
    import types

    from allin1_infer import config

    classes = [config.Config, config.DataConfig, config.HarmonixConfig]
    saved = {name: sys.modules.get(name) for name in ("allin1", "allin1.config")}
    package = types.ModuleType("allin1")
    package.config = config
    sys.modules["allin1"], sys.modules["allin1.config"] = package, config
    for cls in classes:
        cls.__module__ = "allin1.config"
    try:
        yield
    finally:
        for cls in classes:
            cls.__module__ = config.__name__
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def folds_in(weights_dir: str | Path) -> list[Path]:
    """The eight All-In-One fold files of a weights folder (as the Remixer resolves them)."""
    return weights.paths_of(COMPONENT, weights_dir, offline=True)
