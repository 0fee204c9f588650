"""A song of known parts for the song's-own-mix tests and benchmarks/bench_balance.py: a real recording split into
drums, bass and other (quiet for its first half, loud for its second) under a sung voice at a known level; a second
real recording standing in for the generated band; and the measures (BS.1770 balance, 3 s loudness arc).

`fixed_song_and_band` makes a Remixer's first separation return exactly those parts and its generation return the
stand-in band (a wiring set-up: every other stage runs for real)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from remixer import audio, generation, mix, separation
from remixer.testing.voice import syllables

RATE = separation.SAMPLE_RATE
SECONDS = 20.0
SPLIT_S = 10.0  # the song's quiet half ends here
QUIET_DB = -9.0
QUIET_PART, LOUD_PART = (0.0, 8.0), (12.0, 20.0)  # the two halves, clear of the envelope's ramp between them
BAND_START_S = 20.0  # the stand-in band's part of its recording


def known_parts(recording: Path, seconds: float = SECONDS) -> dict[str, np.ndarray]:
    """The recording's first `seconds` as drums (its percussive part above the bass, librosa's HPSS), bass
    (below 150 Hz) and other (the rest), (2, n) float32 at 44.1 kHz: they add up to the recording, played
    QUIET_DB quieter before SPLIT_S (a 50 ms step)."""
    import librosa
    from scipy import signal

    whole = audio.decode(recording)
    music = audio.resample(whole.samples, whole.sample_rate, RATE)[:, :int(seconds * RATE)].astype(np.float64)
    bass = signal.sosfiltfilt(signal.butter(4, 150, "low", fs=RATE, output="sos"), music, axis=-1)
    drums = np.stack([librosa.effects.percussive(channel, margin=2.0) for channel in music - bass])
    drums = drums[:, :music.shape[1]]
    other = music - bass - drums
    ramp = np.clip((np.arange(music.shape[1]) / RATE - SPLIT_S) / 0.05, 0, 1)
    arc = 10 ** (QUIET_DB * (1 - ramp) / 20)
    return {name: (part * arc).astype(np.float32) for name, part in (("drums", drums), ("bass", bass),
                                                                      ("other", other))}


def sung_voice(against: np.ndarray, over_lu: float, seconds: float = SECONDS) -> np.ndarray:
    """Sung syllables twice a second, centred (2, n) at 44.1 kHz, `over_lu` LU louder than `against`."""
    sung = syllables(np.arange(0.3, seconds - 0.5, 0.5), seconds, f0=220.0, length=0.35, rate=RATE)
    stereo = np.stack([sung, sung]).astype(np.float64)
    gain = 10 ** ((audio.loudness_lufs(against, RATE) + over_lu - audio.loudness_lufs(stereo, RATE)) / 20)
    return (stereo * gain).astype(np.float32)


def stand_in_band(recording: Path, seconds: float = SECONDS) -> np.ndarray:
    """What stands in for the generated band: the recording from BAND_START_S, (2, n) at 32 kHz, at its own
    level (one level throughout, as a generated band plays)."""
    whole = audio.decode(recording)
    start = int(BAND_START_S * whole.sample_rate)
    return audio.resample(whole.samples[:, start:start + int(seconds * whole.sample_rate)], whole.sample_rate,
                          generation.SAMPLE_RATE)


@contextmanager
def fixed_song_and_band(remixer, parts: dict[str, np.ndarray], vocals: np.ndarray, band: np.ndarray,
                        channels: int) -> Iterator[None]:
    """While inside: the Remixer's first separation returns `parts` and `vocals` (later ones, the new band's,
    run for real), and generation returns `band` (at the model's `channels`) as every take."""
    real_separate, real_generate = remixer.separator.separate, generation.generate_takes
    calls = []

    def separate(samples, rate, *args, **kwargs):
        calls.append(rate)
        if len(calls) > 1:
            return real_separate(samples, rate, *args, **kwargs)
        return separation.Stems({**parts, "vocals": vocals})

    def generate(*args, **kwargs):
        import torch

        made = audio.convert_channels(band, channels)
        frames = int(made.shape[1] / generation.SAMPLE_RATE * generation.FRAME_RATE)
        return [generation.Generated(torch.zeros((4 * channels, frames), dtype=torch.long), made,
                                     generation.SAMPLE_RATE, kwargs.get("seed") or 0)]

    remixer.separator.separate, generation.generate_takes = separate, generate
    try:
        yield
    finally:
        remixer.separator.separate, generation.generate_takes = real_separate, real_generate


def write_song(folder: Path, parts: dict[str, np.ndarray], vocals: np.ndarray) -> Path:
    """The song the parts make, as a float wav."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "song.wav"
    sf.write(path, (sum(parts.values()) + vocals).T, RATE, subtype="FLOAT")
    return path


def balance_lu(vocals: np.ndarray, band: np.ndarray, rate: int, start: float = 0.0, end: float | None = None
               ) -> float:
    """LUFS(vocals) - LUFS(band) between `start` and `end` (s)."""
    a, b = int(start * rate), None if end is None else int(end * rate)
    return audio.loudness_lufs(vocals[:, a:b], rate) - audio.loudness_lufs(band[:, a:b], rate)


def arc_correlation(band: np.ndarray, rate: int, reference: np.ndarray, reference_rate: int) -> float:
    """Pearson correlation of the two signals' 3 s loudness, second by second."""
    a, b = mix.short_term_loudness(band, rate), mix.short_term_loudness(reference, reference_rate)
    count = min(len(a), len(b))
    return float(np.corrcoef(a[:count], b[:count])[0, 1])
