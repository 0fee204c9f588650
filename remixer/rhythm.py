"""Rhythm analysis with All-In-One (allin1_infer), fed our own stems.

The analyzer never separates again: it gets the stems the separation stage
already made. For the generated instrumental (which has no vocals) the
pipeline separates that audio too before analysing it: All-In-One was
trained on demucs stems, and handing it a full mix as one stem gives it
input it never saw, which costs downbeat accuracy, the one thing beat-sync
needs from it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from remixer import checkpoints
from remixer.errors import RemixerError

log = logging.getLogger(__name__)

COMPONENT = "allin1"
ENSEMBLE = "harmonix-all"
SAMPLE_RATE = 44100


class RhythmError(RemixerError):
    """A rhythm model we cannot use, explained."""


@dataclass(frozen=True)
class Section:
    start: float
    end: float
    label: str  # intro, verse, chorus, ...


@dataclass(frozen=True)
class Rhythm:
    """bpm (None when no beat was found), beats and downbeats in seconds."""

    bpm: float | None
    beats: list[float] = field(default_factory=list)
    downbeats: list[float] = field(default_factory=list)
    beat_positions: list[int] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)


class RhythmAnalyzer:
    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.model = model.to(device).eval()
        self.device = device

    def analyze(self, stems: Mapping[str, np.ndarray]) -> Rhythm:
        """Stems (drums, bass, other, vocals; (2, n) float32 at 44.1 kHz) -> Rhythm."""
        from allin1_infer.spectrogram import STEM_NAMES, compute_spectrogram_from_stem_arrays
        from allin1_infer.stems import quantize_stem_to_madmom_mono_int16

        start = time.perf_counter()
        missing = [name for name in STEM_NAMES if name not in stems]
        if missing:
            raise ValueError(f"rhythm analysis needs the stems {STEM_NAMES}; missing {missing}")
        # The same int16 mono the library would read back from stem wav files.
        mono = {name: quantize_stem_to_madmom_mono_int16(torch.from_numpy(np.atleast_2d(stems[name])))
                for name in STEM_NAMES}
        spec = compute_spectrogram_from_stem_arrays(mono, SAMPLE_RATE)
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(spec)[None].to(self.device))
        rhythm = _postprocess(logits, self.model.cfg)
        log.info("rhythm: bpm %s, %d beats, %d downbeats in %.1f s", rhythm.bpm, len(rhythm.beats),
                 len(rhythm.downbeats), time.perf_counter() - start)
        return rhythm


def _postprocess(logits, cfg) -> Rhythm:
    from allin1_infer.postprocessing.functional import postprocess_functional_structure
    from allin1_infer.postprocessing.metrical import postprocess_metrical_structure
    from allin1_infer.postprocessing.tempo import estimate_tempo_from_beats

    metrical = postprocess_metrical_structure(logits, cfg)
    sections = [Section(float(s.start), float(s.end), str(s.label))
                for s in postprocess_functional_structure(logits, cfg)]
    beats = [float(b) for b in metrical["beats"]]
    bpm = estimate_tempo_from_beats(beats)
    downbeats = [float(d) for d in metrical["downbeats"]]
    if bpm is None or len(downbeats) < 2:
        # No usable pulse (speech, ambient, silence): beat-sync is skipped downstream.
        return Rhythm(None, beats, [], metrical["beat_positions"], sections)
    return Rhythm(float(bpm), beats, downbeats, [int(p) for p in metrical["beat_positions"]], sections)


def read_fold(path: str | Path, device: torch.device) -> torch.nn.Module:
    """One All-In-One fold ({'config', 'state_dict'}), unpickled safely. The published files' config may be
    a plain dict or a pickled OmegaConf DictConfig of All-In-One's structured config: both load."""
    from allin1_infer.models.allinone import AllInOne
    from omegaconf import OmegaConf

    package = checkpoints.read(path, "All-In-One checkpoint", checkpoints.ALLIN1)
    if not {"config", "state_dict"} <= set(package):
        raise RhythmError(f"{path}: an All-In-One checkpoint holds 'config' and 'state_dict'; "
                          f"this one has {sorted(package)}")
    config = OmegaConf.create(checkpoints.plain(package["config"]))
    try:
        model = AllInOne(config)
        model.load_state_dict(package["state_dict"])
    except Exception as error:  # noqa: BLE001 - a config or state that does not build the model
        raise RhythmError(f"{path}: not a usable All-In-One fold ({str(error).splitlines()[0]})") from None
    return model.to(device).eval()


def select_folds(paths: list[Path], model: str = ENSEMBLE) -> list[Path]:
    """The files of `model`: all eight folds for the ensemble, else the one named harmonix-foldN."""
    if model == ENSEMBLE:
        return list(paths)
    chosen = [p for p in paths if p.name.startswith(f"{model}-")]
    if not chosen:
        raise RhythmError(f"unknown All-In-One model {model!r}; use {ENSEMBLE} or harmonix-fold0..7")
    return chosen


def load_analyzer(paths: list[Path], device: str | torch.device) -> RhythmAnalyzer:
    """One fold, or the ensemble of several, from All-In-One's checkpoint files, on `device`."""
    from allin1_infer.models.ensemble import Ensemble

    device = torch.device(device)
    folds = [read_fold(path, device) for path in paths]
    model = folds[0] if len(folds) == 1 else Ensemble(folds).to(device).eval()
    return RhythmAnalyzer(model, device)
