"""Chord recognition: audio -> BTC logits -> chord segments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import from_package, read_checkpoint
from .features import SECONDS_PER_FRAME, WINDOW_FRAMES, extract_features
from .model import BTC
from .vocabulary import vocabulary_for


@dataclass(frozen=True)
class ChordSegment:
    start: float  # seconds
    end: float
    label: str


class ChordRecognizer:
    """A loaded BTC model with its vocabulary and feature normalisation."""

    def __init__(self, model: BTC, mean: float, std: float):
        self.model = model
        self.mean = mean
        self.std = std
        self.labels = vocabulary_for(model.classes)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def logits(self, features: np.ndarray) -> np.ndarray:
        """(padded frames, classes) logits from un-normalised log-CQT features."""
        frames = features.shape[0]
        padded = -(-frames // WINDOW_FRAMES) * WINDOW_FRAMES
        normalised = np.zeros((padded, features.shape[1]), np.float32)
        normalised[:frames] = (features - self.mean) / self.std
        # Every 108-frame window is independent: run them as one batch.
        windows = torch.from_numpy(normalised).view(-1, WINDOW_FRAMES, features.shape[1]).to(self.device)
        return self.model(windows).reshape(padded, -1).float().cpu().numpy()

    def recognize(self, audio: np.ndarray, sample_rate: int) -> list[ChordSegment]:
        """Chord segments (start, end, label; seconds) covering the whole audio: (n,) or (channels, n) float
        at `sample_rate` (downmixed and resampled to 22050 Hz for the features)."""
        audio = np.asarray(audio, dtype=np.float32)
        duration = audio.shape[-1] / sample_rate
        features = extract_features(audio, sample_rate)
        classes = self.logits(features)[: features.shape[0]].argmax(axis=1)
        return frames_to_segments(classes, self.labels, duration)


def frames_to_segments(classes: np.ndarray, labels: tuple[str, ...], duration: float) -> list[ChordSegment]:
    """Merge runs of equal frame predictions into segments; the last ends at `duration`."""
    if len(classes) == 0:
        return []
    changes = np.flatnonzero(np.diff(classes)) + 1
    starts = np.concatenate([[0], changes])
    ends = np.concatenate([changes, [len(classes)]])
    segments = []
    for start, end in zip(starts, ends):
        t0 = float(start * SECONDS_PER_FRAME)
        if t0 >= duration:
            break
        t1 = min(float(end * SECONDS_PER_FRAME), duration) if end < len(classes) else duration
        segments.append(ChordSegment(t0, t1, labels[classes[start]]))
    return segments


def load_model(checkpoint_path: str | Path, device: str | torch.device = "cpu") -> ChordRecognizer:
    model, mean, std = read_checkpoint(checkpoint_path, device)
    return ChordRecognizer(model, mean, std)


def recognizer_from_package(data, source: str | Path, device: str | torch.device = "cpu") -> ChordRecognizer:
    """A recognizer from an already unpickled checkpoint (the caller chose how to read the file)."""
    model, mean, std = from_package(data, source, device)
    return ChordRecognizer(model, mean, std)


def write_lab(segments: list[ChordSegment], path: str | Path) -> Path:
    """Write segments as a .lab file (start end label, seconds with 3 decimals)."""
    path = Path(path)
    path.write_text("".join(f"{s.start:.3f} {s.end:.3f} {s.label}\n" for s in segments))
    return path


def read_lab(path: str | Path) -> list[ChordSegment]:
    segments = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            start, end, label = line.split(maxsplit=2)
            segments.append(ChordSegment(float(start), float(end), label.strip()))
    return segments
