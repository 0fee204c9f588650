"""Voice-like test material and the measures key and tempo changes are judged by (tests and
benchmarks/bench_keytempo.py): a sung vowel with known formants, syllables with sharp onsets, and
pitch (cents), envelope (dB), onset (ms) and artefact (dB) figures."""

from __future__ import annotations

import numpy as np
from scipy import signal

RATE = 44100
VOWEL_A = ((730.0, 90.0), (1090.0, 110.0), (2440.0, 170.0), (3400.0, 250.0))  # /a/: formant Hz, bandwidth Hz


def vowel(f0: float = 196.0, seconds: float = 2.0, rate: int = RATE, formants=VOWEL_A,
          vibrato_cents: float = 0.0) -> np.ndarray:
    """A sung vowel, mono (n,) float32: a glottal pulse train (Rosenberg pulses, 40% open) through a cascade
    of two-pole formant resonators; optional 5 Hz vibrato."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    pitch = f0 * 2.0 ** (vibrato_cents / 1200.0 * np.sin(2 * np.pi * 5.0 * t))
    phase = np.cumsum(pitch / rate) % 1.0
    opening = 0.4
    rising = np.clip(phase / (0.6 * opening), 0, 1)
    falling = np.clip((phase - 0.6 * opening) / (0.4 * opening), 0, 1)
    flow = np.where(phase < 0.6 * opening, 0.5 * (1 - np.cos(np.pi * rising)),
                    np.where(phase < opening, np.cos(0.5 * np.pi * falling), 0.0))
    source = np.diff(flow, prepend=0.0)  # the flow's derivative excites the vocal tract
    voice = source
    for frequency, bandwidth in formants:
        radius = np.exp(-np.pi * bandwidth / rate)
        theta = 2 * np.pi * frequency / rate
        voice = signal.lfilter([1 - radius], [1, -2 * radius * np.cos(theta), radius ** 2], voice)
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.01 * rate))
    voice = voice * fade
    return (0.5 * voice / np.abs(voice).max()).astype(np.float32)


def syllables(onsets: np.ndarray, seconds: float, f0: float = 220.0, length: float = 0.25,
              rate: int = RATE) -> np.ndarray:
    """Short sung syllables starting sharply at `onsets` (s), mono (n,) float32; silence between."""
    out = np.zeros(int(seconds * rate), np.float32)
    note = vowel(f0, length + 0.02, rate)
    attack = np.minimum(1.0, np.arange(note.size) / (0.001 * rate))  # a 1 ms attack
    for t in onsets:
        i = int(round(t * rate))
        piece = (note * attack)[:out.size - i]
        out[i:i + piece.size] += piece
    return out


def median_f0(audio: np.ndarray, rate: int = RATE, low: float = 60.0, high: float = 1000.0) -> float:
    """Median f0 (Hz) of the voiced frames (librosa.pyin), NaN when none is voiced."""
    import librosa

    mono = audio.mean(axis=0) if audio.ndim == 2 else audio
    f0, voiced, _ = librosa.pyin(mono.astype(np.float32), fmin=low, fmax=high, sr=rate, frame_length=2048)
    f0 = f0[voiced & np.isfinite(f0)]
    return float(np.median(f0)) if f0.size else float("nan")


def cents(measured: float, expected: float) -> float:
    """The interval from `reference` to `frequency`, in cents."""
    return float(1200.0 * np.log2(measured / expected))


def envelope_db(audio: np.ndarray, rate: int = RATE, order: int = 18, analysis_rate: int = 16000,
                bins: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The LPC spectral envelope (dB, mean removed) of the middle of `audio`, and its frequencies (Hz)."""
    import librosa

    mono = audio.mean(axis=0) if audio.ndim == 2 else audio
    middle = mono[mono.size // 4: 3 * mono.size // 4]
    resampled = librosa.resample(middle.astype(np.float64), orig_sr=rate, target_sr=analysis_rate)
    coefficients = librosa.lpc(resampled * np.hamming(resampled.size), order=order)
    frequencies, response = signal.freqz([1.0], coefficients, worN=bins, fs=analysis_rate)
    level = 20 * np.log10(np.abs(response) + 1e-12)
    return level - level.mean(), frequencies


def envelope_distance_db(before: np.ndarray, after: np.ndarray, rate: int = RATE,
                         band: tuple[float, float] = (200.0, 4000.0)) -> float:
    """RMS difference (dB) of two signals' LPC envelopes over `band`: 0 when the formants did not move."""
    a, frequencies = envelope_db(before, rate)
    b, _ = envelope_db(after, rate)
    inside = (frequencies >= band[0]) & (frequencies <= band[1])
    difference = (a - b)[inside]
    return float(np.sqrt(np.mean((difference - difference.mean()) ** 2)))


def formant_peaks(audio: np.ndarray, rate: int = RATE, count: int = 2) -> list[float]:
    """The first `count` peaks (Hz) of the LPC envelope above 200 Hz."""
    level, frequencies = envelope_db(audio, rate)
    peaks, _ = signal.find_peaks(level)
    return [float(frequencies[p]) for p in peaks if frequencies[p] > 200.0][:count]


def onsets(audio: np.ndarray, rate: int = RATE, level: float = 0.05, gap: float = 0.05) -> np.ndarray:
    """Times (s) where the smoothed level first rises past `level` of the peak after `gap` s of quiet."""
    mono = np.abs(audio.mean(axis=0) if audio.ndim == 2 else audio)
    smooth = np.convolve(mono, np.ones(int(0.002 * rate)) / int(0.002 * rate), mode="same")
    loud = np.flatnonzero(smooth > level * smooth.max())
    if not loud.size:
        return np.array([])
    starts = loud[np.concatenate([[True], np.diff(loud) > int(gap * rate)])]
    return starts / rate


def onset_errors_ms(audio: np.ndarray, expected: np.ndarray, rate: int = RATE) -> np.ndarray:
    """For each expected onset, the signed error (ms) of the nearest found one."""
    found = onsets(audio, rate)
    if not found.size:
        return np.full(len(expected), np.nan)
    return np.array([1000.0 * (found[np.argmin(np.abs(found - t))] - t) for t in expected])


def artefact_db(audio: np.ndarray, frequency: float, rate: int = RATE, width: float = 0.03) -> float:
    """Energy (dB) outside +-`width` of `frequency` and its harmonics, relative to the whole, over the
    middle of a sustained tone: lower is cleaner."""
    mono = audio.mean(axis=0) if audio.ndim == 2 else audio
    middle = mono[mono.size // 4: 3 * mono.size // 4]
    power = np.abs(np.fft.rfft(middle * np.hanning(middle.size))) ** 2
    frequencies = np.fft.rfftfreq(middle.size, 1 / rate)
    harmonic = np.round(frequencies / frequency)
    near = (harmonic >= 1) & (np.abs(frequencies - harmonic * frequency) <= width * frequency)
    return float(10 * np.log10(power[~near].sum() / power.sum() + 1e-12))
