"""Stem separation with demucs (htdemucs): drums, bass, other, vocals; once per song."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from remixer import checkpoints
from remixer.audio import convert_channels, resample
from remixer.errors import RemixerError

log = logging.getLogger(__name__)

SAMPLE_RATE = 44100
STEM_NAMES = ("drums", "bass", "other", "vocals")
COMPONENT = "htdemucs"


class Stems(Mapping):
    """The four stems, each float32 (2, n) at 44.1 kHz, plus the mixes the pipeline needs."""

    sample_rate = SAMPLE_RATE

    def __init__(self, stems: dict[str, np.ndarray]):
        self._stems = {name: stems[name] for name in STEM_NAMES}

    def __getitem__(self, name: str) -> np.ndarray:
        return self._stems[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._stems)

    def __len__(self) -> int:
        return len(self._stems)

    @property
    def vocals(self) -> np.ndarray:
        """(2, samples) float32 at 44.1 kHz."""
        return self._stems["vocals"]

    @property
    def drumless(self) -> np.ndarray:
        """Vocals + bass + other: what chord recognition listens to."""
        return self._stems["vocals"] + self._stems["bass"] + self._stems["other"]

    @property
    def accompaniment(self) -> np.ndarray:
        """Everything but the vocals."""
        return self._stems["drums"] + self._stems["bass"] + self._stems["other"]


class Separator:
    """A loaded demucs model. `runs` counts separations, so callers can prove there was one."""

    def __init__(self, model: torch.nn.Module, device: torch.device, segment: float | None = None,
                 overlap: float = 0.25):
        self.model = model.to(device).eval()
        self.device = device
        self.segment = segment
        self.overlap = overlap
        self.runs = 0

    def separate(self, samples: np.ndarray, sample_rate: int, progress: bool = False) -> Stems:
        """demucs (htdemucs) stems of `samples` ((channels, n) or (n,) at `sample_rate`): a Stems of
        drums, bass, other, vocals, each (2, n') float32 at 44.1 kHz (SAMPLE_RATE), n' = the song's length there."""
        from demucs_infer.apply import apply_model

        start = time.perf_counter()
        stereo = resample(convert_channels(np.atleast_2d(samples), 2), sample_rate, SAMPLE_RATE)
        mix = torch.from_numpy(stereo)
        # demucs expects a standardised mix and gives stems on the same scale.
        reference = mix.mean(0)
        mean, std = reference.mean(), reference.std()
        std = std if std > 1e-8 else torch.tensor(1.0)
        with torch.inference_mode():
            sources = apply_model(
                self.model, ((mix - mean) / std)[None], shifts=0, split=True, overlap=self.overlap,
                segment=self.segment, device=self.device, progress=progress,
            )[0]
        sources = (sources * std + mean).cpu().numpy().astype(np.float32)
        self.runs += 1
        names = list(self.model.sources)
        log.info("separation: %.1f s of audio in %.1f s", stereo.shape[1] / SAMPLE_RATE,
                 time.perf_counter() - start)
        return Stems({name: sources[names.index(name)] for name in STEM_NAMES})


class SeparationError(RemixerError):
    """A demucs checkpoint we cannot use, explained."""


def read_model(path: str | Path) -> torch.nn.Module:
    """An htdemucs checkpoint in demucs' own package format (klass, args, kwargs, state), unpickled safely."""
    from demucs_infer.htdemucs import HTDemucs

    package = checkpoints.read(path, "demucs checkpoint", checkpoints.DEMUCS)
    if not {"klass", "args", "kwargs", "state"} <= set(package):
        raise SeparationError(f"{path}: a demucs checkpoint holds 'klass', 'args', 'kwargs' and 'state'; "
                              f"this one has {sorted(package)}")
    if package["klass"] is not HTDemucs:
        raise SeparationError(f"{path}: holds a {package['klass']!r}, not an htdemucs model")
    state = package["state"]
    if state.get("__quantized"):
        raise SeparationError(f"{path}: a diffq-quantized demucs model; use the published htdemucs file")
    kwargs = dict(package["kwargs"])
    accepted = inspect.signature(HTDemucs).parameters
    for name in [name for name in kwargs if name not in accepted]:  # as demucs' own loader does
        log.warning("%s: ignoring the unknown htdemucs argument %r", Path(path).name, name)
        del kwargs[name]
    try:
        model = HTDemucs(*package["args"], **kwargs)
        model.load_state_dict(state)
    except (TypeError, RuntimeError) as error:
        raise SeparationError(f"{path}: its weights do not fit htdemucs ({str(error).splitlines()[0]})") from None
    return model


def load_separator(path: str | Path, device: str | torch.device, segment: float | None = None,
                   overlap: float = 0.25) -> Separator:
    """The separator of an htdemucs checkpoint file, on `device`."""
    return Separator(read_model(path), torch.device(device), segment, overlap)
