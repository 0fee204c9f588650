"""Synthetic music with known downbeats and beats, and how far a stretched copy's clicks land from them; a real
recording read at a drifting pace, with where it plays each of its times.

Shared by the beat-sync tests and benchmarks (never imported by the product).
"""

from __future__ import annotations

import numpy as np

SR = 32000
BAR = 2.0  # 120 bpm in 4/4
CLICK = 160


def instrumental(downbeats: np.ndarray, seconds: float, bass: float = 0.2) -> np.ndarray:
    """A 55 Hz bass line plus a sharp 3 kHz click on every downbeat; stereo, right at 0.7."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    mono = bass * np.sin(2 * np.pi * 55 * t)
    burst = 0.8 * np.exp(-np.arange(CLICK) / 30) * np.sin(2 * np.pi * 3000 * np.arange(CLICK) / SR)
    for d in downbeats:
        i = int(round(d * SR))
        if i + CLICK < n:
            mono[i:i + CLICK] += burst
    return np.stack([mono, 0.7 * mono]).astype(np.float32)


def onset_errors(audio: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Signed error (s) of the first click attack within +-50 ms of each target; NaN if none."""
    attack = np.abs(np.diff(audio[0], prepend=0.0))  # the bass barely moves sample to sample
    errors = []
    for t in targets:
        lo = max(int((t - 0.05) * SR), 0)
        above = np.flatnonzero(attack[lo:int((t + 0.05) * SR)] > 0.05)
        errors.append((lo + above[0]) / SR - t if above.size else np.nan)
    return np.array(errors)


def warped(generated: np.ndarray, tempo: float, drift: float, offset: float) -> np.ndarray:
    """The song's downbeats: bars `tempo` times shorter, their length drifting by
    +-`drift` over 16 bars, and a leading offset."""
    k = np.arange(len(generated) - 1)
    bars = np.diff(generated) / tempo * (1 + drift * np.sin(2 * np.pi * k / 16))
    return generated[0] + offset + np.concatenate([[0.0], np.cumsum(bars)])


def bass_purity(audio: np.ndarray) -> float:
    """The bass part's energy near its fundamental over its whole energy (0..1)."""
    mono = audio[0, SR:-SR]
    power = np.abs(np.fft.rfft(mono * np.hanning(mono.size))) ** 2
    freqs = np.fft.rfftfreq(mono.size, 1 / SR)
    return float(power[(freqs > 50) & (freqs < 60)].sum() / power.sum())


BEAT_CLICK = 96


def click_track(bars: np.ndarray, seconds: float, eighths: bool = False) -> np.ndarray:
    """Generated music as a drummer plays it: 4 beats per bar (the downbeat louder), optionally a
    quieter hi-hat on every eighth between; clicks are short 3 kHz bursts, stereo (right at 0.7)."""
    n = int(seconds * SR)
    mono = np.zeros(n)
    shape = np.exp(-np.arange(BEAT_CLICK) / 20) * np.sin(2 * np.pi * 3000 * np.arange(BEAT_CLICK) / SR)
    for start, end in zip(bars[:-1], bars[1:]):
        for step in range(8 if eighths else 4):
            level = 0.9 if step == 0 else (0.6 if not eighths or step % 2 == 0 else 0.3)
            i = int(round((start + step * (end - start) / (8 if eighths else 4)) * SR))
            if i + BEAT_CLICK < n:
                mono[i:i + BEAT_CLICK] += level * shape
    return np.stack([mono, 0.7 * mono]).astype(np.float32)


def attacks(audio: np.ndarray) -> np.ndarray:
    """Times (s) of click attacks: where the signal first rises past a small level after a quiet gap."""
    level = np.abs(audio[0])
    loud = np.flatnonzero(level > 0.05)
    starts = loud[np.concatenate([[True], np.diff(loud) > int(0.03 * SR)])]
    return starts / SR


def signed_errors(audio: np.ndarray, expected: np.ndarray, window: float = 0.03) -> np.ndarray:
    """For each expected onset, the nearest found one minus it, seconds."""
    found = attacks(audio)
    errors = []
    for t in expected:
        near = found[np.abs(found - t) <= window]
        errors.append(near[np.argmin(np.abs(near - t))] - t if near.size else np.nan)
    return np.array(errors)


def groove_scenario(tempo: float, drift: float, seconds: float = 60.0):
    """A song with known downbeats and a band that drifts from them (seconds, audio)."""
    generated = np.arange(0.5, seconds - 2.5, BAR)
    targets = warped(generated, tempo, drift, 0.25)
    keep = targets < seconds - 0.3
    return generated[keep], targets[keep]


def expected_positions(targets: np.ndarray, per_bar: int) -> dict[int, np.ndarray]:
    """Where each beat position of every song bar is (evenly within the bar), by position in the bar."""
    return {step: targets[:-1] + step * np.diff(targets) / per_bar for step in range(per_bar)}


def drum_pattern(meter: int, bpm: float = 120.0, bars: int = 10, start: float = 0.5, sample_rate: int = 44100,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A drum-and-bass pattern in `meter`/4 with known bars: a kick and a bass note changing every bar on
    each downbeat, a hi-hat on every beat (louder on beat 3 of 4/4). Returns (mono float32, beats, downbeats)."""
    rng = np.random.default_rng(seed)
    beat = 60.0 / bpm
    n = int((start + bars * meter * beat + 1.0) * sample_rate)
    song = np.zeros(n)

    def decaying(signal: np.ndarray, decay: float) -> np.ndarray:
        return signal * np.exp(-np.arange(len(signal)) / sample_rate / decay)

    def add(at: float, signal: np.ndarray) -> None:
        i = int(round(at * sample_rate))
        song[i:i + len(signal)] += signal[:n - i]

    hat = int(0.05 * sample_rate)
    bar_samples = np.arange(int(meter * beat * sample_rate)) / sample_rate
    beats = start + beat * np.arange(bars * meter)
    for index, at in enumerate(beats):
        position = index % meter
        level = 0.2 if position == 0 else (0.35 if meter == 4 and position == 2 else 0.25)
        add(at, decaying(level * rng.standard_normal(hat), 0.012))
        if position == 0:
            add(at, decaying(0.9 * np.sin(2 * np.pi * 55 * bar_samples[:int(0.3 * sample_rate)]), 0.08))
            note = (110.0, 147.0, 98.0, 131.0)[(index // meter) % 4]
            add(at, decaying(0.2 * np.sin(2 * np.pi * note * bar_samples), 1.5))
    return song.astype(np.float32), beats, beats[::meter]


def read_at_drifting_pace(samples: np.ndarray, rate: int, seconds: float, lag: float, slope: float,
                          swing: float, period: float) -> tuple[np.ndarray, np.ndarray]:
    """A recording read like a tape whose speed wanders: output time t plays the recording's time
    tau(t) = (1 - slope) t + lag + swing sin(2 pi t / period), linearly interpolated (pitch moves with the
    pace, as on tape). Returns the reading (channels, seconds * rate) and tau at every output sample."""
    t = np.arange(int(round(seconds * rate))) / rate
    tau = (1 - slope) * t + lag + swing * np.sin(2 * np.pi * t / period)
    source = np.atleast_2d(samples)
    reading = np.stack([np.interp(tau * rate, np.arange(source.shape[1]), channel) for channel in source])
    return reading.astype(np.float32), tau


def heard_at(recording_times, tau: np.ndarray, rate: int) -> np.ndarray:
    """When (s, output time) a reading from read_at_drifting_pace plays each of the recording's times."""
    return np.interp(np.asarray(recording_times, dtype=np.float64), tau, np.arange(tau.size) / rate)
