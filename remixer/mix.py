"""Put the song's own vocals back over the new instrumental."""

from __future__ import annotations

import numpy as np

from remixer.audio import convert_channels, normalize, resample

INSTRUMENTAL_LEVEL = 0.5  # of full scale, after peak normalisation (the original's levels)
VOCALS_LEVEL = 0.25


def prepare_vocals(vocals: np.ndarray, vocals_rate: int, sample_rate: int, channels: int, length: int) -> np.ndarray:
    """Vocals (demucs' 44.1 kHz) at the output's rate and the model's channel count, sample-aligned with the
    song and `length` long, resampled once (never through the model's 32 kHz).

    Stereo vocals stay stereo for stereo models (the original downmixed them).
    """
    return conform(vocals, vocals_rate, sample_rate, channels, length)


def conform(stem: np.ndarray, stem_rate: int, sample_rate: int, channels: int, length: int) -> np.ndarray:
    """A demucs stem on the model's rate and channel count, `length` samples from the same start."""
    converted = resample(convert_channels(stem, channels), stem_rate, sample_rate)
    out = np.zeros((channels, length), np.float32)
    count = min(length, converted.shape[1])
    out[:, :count] = converted[:, :count]
    return out


def _peak_scaled(audio: np.ndarray, level: float) -> np.ndarray:
    peak = float(np.abs(audio).max(initial=0.0))
    return audio * (level / peak) if peak > 0 else audio


def mix(
    instrumental: np.ndarray,
    vocals: np.ndarray,
    sample_rate: int,
    strategy: str = "loudness",
    instrumental_level: float = INSTRUMENTAL_LEVEL,
    vocals_level: float = VOCALS_LEVEL,
) -> np.ndarray:
    """Instrumental and vocals (same shape) -> the normalized remix, within +-1."""
    if instrumental.shape != vocals.shape:
        raise ValueError(f"instrumental {instrumental.shape} and vocals {vocals.shape} differ in shape")
    mixed = _peak_scaled(instrumental, instrumental_level) + _peak_scaled(vocals, vocals_level)
    mixed = _peak_scaled(mixed, 1.0)
    # The tanh compressor keeps loudness normalization from clipping.
    return normalize(mixed, sample_rate, strategy, loudness_compressor=True)


def vocals_as_mixed(instrumental: np.ndarray, vocals: np.ndarray, remix: np.ndarray) -> np.ndarray:
    """The vocals at the level they have inside `remix` (what `mix` made of these inputs), for a stem."""
    part = _peak_scaled(vocals, VOCALS_LEVEL)
    summed = _peak_scaled(instrumental, INSTRUMENTAL_LEVEL) + part
    gain = _peak_gain(summed)  # what mix's peak scaling applies, before normalization
    return part * gain * _gain_between(summed * gain, remix)


def level_like(parts: np.ndarray, source: np.ndarray, levelled: np.ndarray) -> np.ndarray:
    """`parts` of `source` scaled as normalisation scaled `source` into `levelled` (the least-squares gain)."""
    return (parts * _gain_between(source, levelled)).astype(np.float32)


def _gain_between(before: np.ndarray, after: np.ndarray) -> float:
    energy = float(np.sum(before.astype(np.float64) ** 2))
    return float(np.sum(before.astype(np.float64) * after)) / energy if energy > 0 else 0.0


def _peak_gain(audio: np.ndarray) -> float:
    peak = float(np.abs(audio).max(initial=0.0))
    return 1.0 / peak if peak > 0 else 1.0
