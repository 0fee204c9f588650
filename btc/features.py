"""BTC input features: log-magnitude constant-Q transform, per 10 s chunk."""

from __future__ import annotations

import warnings

import numpy as np

SAMPLE_RATE = 22050
CHUNK_SECONDS = 10
N_BINS = 144
BINS_PER_OCTAVE = 24
HOP = 2048
WINDOW_FRAMES = 108
SECONDS_PER_FRAME = CHUNK_SECONDS / WINDOW_FRAMES


def extract_features(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log-CQT of mono audio, (frames, 144) float32, before mean/std normalisation.

    The CQT runs on each 10 s chunk separately, as BTC was trained, so every
    full chunk gives exactly 108 frames and frame times stay on a 10/108 s grid.
    """
    mono = np.asarray(audio, dtype=np.float32)
    if mono.ndim == 2:
        mono = mono.mean(axis=0)
    if sample_rate != SAMPLE_RATE:  # band-limited, high quality (soxr), as the product resamples
        import soxr

        mono = soxr.resample(np.ascontiguousarray(mono), sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    chunk = SAMPLE_RATE * CHUNK_SECONDS
    if len(mono) == 0:
        raise ValueError("no audio to analyse")
    # Full chunks, then the rest (up to 10 s), as the reference does.
    bounds = list(range(0, len(mono), chunk))
    pieces = [_log_cqt(mono[a:b]) for a, b in zip(bounds, [*bounds[1:], len(mono)])]
    return np.concatenate(pieces, axis=0).astype(np.float32)


def _log_cqt(samples: np.ndarray) -> np.ndarray:
    import librosa

    with warnings.catch_warnings():
        # A short last chunk is expected; librosa pads it and says so.
        warnings.filterwarnings("ignore", message="n_fft=.* is too large")
        cqt = librosa.cqt(samples, sr=SAMPLE_RATE, n_bins=N_BINS, bins_per_octave=BINS_PER_OCTAVE, hop_length=HOP)
    return np.log(np.abs(cqt) + 1e-6).T
