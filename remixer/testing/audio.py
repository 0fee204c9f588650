"""Short synthetic songs for tests and benchmarks: tones, a two-tone song file, the loudest frequency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def tone(freq: float = 440.0, seconds: float = 2.0, sample_rate: int = 44100, channels: int = 2,
         amplitude: float = 0.5) -> np.ndarray:
    """A sine, (channels, n) float32; the right channel a fifth above, so channels differ."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rows = [amplitude * np.sin(2 * np.pi * freq * (1.5 ** c) * t) for c in range(channels)]
    return np.stack(rows).astype(np.float32)


def dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    """The strongest frequency of (n,) or (channels, n) audio, Hz (FFT peak)."""
    mono = samples.mean(axis=0) if samples.ndim == 2 else samples
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(mono.size)))
    return float(np.fft.rfftfreq(mono.size, 1 / sample_rate)[spectrum.argmax()])


def write_song(path: Path, seconds: float, low: float = 220, high: float = 277, rate: int = 44100) -> Path:
    """Two stereo tones, as a short song to remix."""
    music = tone(low, seconds, rate, amplitude=0.3) + tone(high, seconds, rate, amplitude=0.2)
    sf.write(path, music.T, rate)
    return path
