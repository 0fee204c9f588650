"""Key and tempo: pitch-shift and time-stretch candidates side by side, on the same material.

    .venv/bin/python benchmarks/bench_keytempo.py

Candidates: librosa's phase vocoder (the baseline), Signalsmith Stretch (`python-stretch`, MIT) alone and
with our spectral-envelope correction (what remixer.keytempo ships), Rubber Band 3 (the `rubberband` CLI,
`--fine --formant`, GPL), pedalboard (GPL, bundles Rubber Band; `preserve_formants=True`) and, for
stretching, our WSOLA (remixer.beatsync). The GPL candidates are measured when installed
(`apt-get install rubberband-cli`, `pip install pedalboard==0.9.26`); they are not dependencies.

Material (remixer.testing.voice): a sung /a/ at 196 Hz with known formants (pitch, envelope), syllables
with 1 ms attacks (onsets), a 440 Hz sine (artefacts), 10 s of each.
Figures: f0 error (cents, librosa.pyin median against the expected pitch), envelope distance (dB RMS of
the LPC envelopes before and after, 200-4000 Hz; 0 = formants kept), onset error (ms, worst of 8), energy
off the expected partials of the sine and off the expected harmonics of the sung vowel (dB, lower is
cleaner; the synthetic vowel itself has none), seconds per minute of mono 44.1 kHz audio.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

from remixer import beatsync, keytempo
from remixer.testing import voice

RATE = voice.RATE
SECONDS = 10.0
ONSETS = np.arange(0.5, SECONDS - 1.0, 1.1)[:8]
Shifter = Callable[[np.ndarray, float], np.ndarray]  # (1, n), semitones -> (1, n)
Stretcher = Callable[[np.ndarray, float], np.ndarray]  # (1, n), time factor -> (1, n * factor)


def librosa_shift(x: np.ndarray, semitones: float) -> np.ndarray:
    import librosa

    return librosa.effects.pitch_shift(x, sr=RATE, n_steps=semitones)


def librosa_stretch(x: np.ndarray, factor: float) -> np.ndarray:
    import librosa

    return librosa.effects.time_stretch(x, rate=1.0 / factor)


def signalsmith_shift(x: np.ndarray, semitones: float) -> np.ndarray:
    return keytempo.shift_pitch(x, RATE, semitones, keep_formants=False)


def ours_shift(x: np.ndarray, semitones: float) -> np.ndarray:
    return keytempo.shift_pitch(x, RATE, semitones)


def signalsmith_stretch(x: np.ndarray, factor: float) -> np.ndarray:
    return keytempo.stretch_time(x, RATE, factor)


def wsola_stretch(x: np.ndarray, factor: float) -> np.ndarray:
    return beatsync.wsola(x, 1.0 / factor, int(round(x.shape[1] * factor)))


def rubberband(x: np.ndarray, semitones: float = 0.0, factor: float = 1.0) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        sf.write(source, x.T, RATE, subtype="FLOAT")
        subprocess.run(["rubberband", "--fine", "--formant", "-q", "-p", str(semitones), "-t", str(factor),
                        str(source), str(target)], check=True, capture_output=True)
        out, _ = sf.read(target, dtype="float32", always_2d=True)
    return out.T


def pedalboard_run(x: np.ndarray, semitones: float = 0.0, factor: float = 1.0) -> np.ndarray:
    import pedalboard

    return pedalboard.time_stretch(x, RATE, stretch_factor=1.0 / factor, pitch_shift_in_semitones=semitones,
                                   preserve_formants=True)


def candidates() -> tuple[dict[str, Shifter | None], dict[str, Stretcher | None]]:
    """Name -> function, or None when the library is not installed here."""
    try:
        import pedalboard  # noqa: F401
        has_pedalboard = True
    except ImportError:
        has_pedalboard = False
    has_rubberband = shutil.which("rubberband") is not None
    shifters = {
        "librosa phase vocoder (ISC)": librosa_shift,
        "Signalsmith Stretch (MIT)": signalsmith_shift,
        "Signalsmith + envelope correction (ours, shipped)": ours_shift,
        "Rubber Band 3 --fine --formant (GPL)": (lambda x, s: rubberband(x, semitones=s)) if has_rubberband else None,
        "pedalboard, formants kept (GPL)": (lambda x, s: pedalboard_run(x, semitones=s)) if has_pedalboard else None,
    }
    stretchers = {
        "librosa phase vocoder (ISC)": librosa_stretch,
        "Signalsmith Stretch (MIT, shipped)": signalsmith_stretch,
        "WSOLA (ours)": wsola_stretch,
        "Rubber Band 3 --fine --formant (GPL)": (lambda x, f: rubberband(x, factor=f)) if has_rubberband else None,
        "pedalboard, formants kept (GPL)": (lambda x, f: pedalboard_run(x, factor=f)) if has_pedalboard else None,
    }
    return shifters, stretchers


def timed(function, *args) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = function(*args)
    return np.asarray(out, dtype=np.float32).reshape(1, -1), time.perf_counter() - start


def measure_shift(shift: Shifter, semitones: float) -> dict:
    ratio = 2.0 ** (semitones / 12.0)
    sung = voice.vowel(196.0, SECONDS)[None]
    shift(sung[:, :RATE], semitones)  # warm-up (librosa compiles on first use)
    shifted, seconds = timed(shift, sung, semitones)
    syllables = voice.syllables(ONSETS, SECONDS)[None]
    sine = (0.5 * np.sin(2 * np.pi * 440.0 * np.arange(int(SECONDS * RATE)) / RATE)).astype(np.float32)[None]
    return {"cents": voice.cents(voice.median_f0(shifted), 196.0 * ratio),
            "envelope_db": voice.envelope_distance_db(sung, shifted),
            "onset_ms": float(np.nanmax(np.abs(voice.onset_errors_ms(timed(shift, syllables, semitones)[0],
                                                                        ONSETS)))),
            "artefact_db": voice.artefact_db(timed(shift, sine, semitones)[0], 440.0 * ratio),
            "vowel_artefact_db": voice.artefact_db(shifted, 196.0 * ratio),
            "s_per_min": seconds * 60.0 / SECONDS}


def measure_stretch(stretch: Stretcher, factor: float) -> dict:
    sung = voice.vowel(196.0, SECONDS)[None]
    stretch(sung[:, :RATE], factor)  # warm-up
    stretched, seconds = timed(stretch, sung, factor)
    syllables = voice.syllables(ONSETS, SECONDS)[None]
    sine = (0.5 * np.sin(2 * np.pi * 440.0 * np.arange(int(SECONDS * RATE)) / RATE)).astype(np.float32)[None]
    return {"cents": voice.cents(voice.median_f0(stretched), 196.0),
            "envelope_db": voice.envelope_distance_db(sung, stretched),
            "onset_ms": float(np.nanmax(np.abs(voice.onset_errors_ms(timed(stretch, syllables, factor)[0],
                                                                        ONSETS * factor)))),
            "artefact_db": voice.artefact_db(timed(stretch, sine, factor)[0], 440.0),
            "vowel_artefact_db": voice.artefact_db(stretched, 196.0),
            "s_per_min": seconds * 60.0 / SECONDS}


def print_table(title: str, rows: list[tuple[str, str, dict | None]]) -> None:
    print(f"\n{title}\n")
    print("| candidate | change | f0 error (cents) | envelope distance (dB) | worst onset error (ms) "
          "| off-partial energy, sine (dB) | off-harmonic energy, sung vowel (dB) | s per min of audio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, change, r in rows:
        if r is None:
            print(f"| {name} | {change} | not installed | | | | | |")
            continue
        print(f"| {name} | {change} | {r['cents']:+.1f} | {r['envelope_db']:.2f} | {r['onset_ms']:.1f} "
              f"| {r['artefact_db']:.1f} | {r['vowel_artefact_db']:.1f} | {r['s_per_min']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shift", type=float, action="append", help="semitones (default: +4 and -5)")
    parser.add_argument("--factor", type=float, action="append", help="time factors (default: 0.8 and 1.25)")
    args = parser.parse_args()
    shifters, stretchers = candidates()
    print_table("Pitch shift (timing kept)", [
        (name, f"{s:+g} st", measure_shift(f, s) if f else None)
        for s in args.shift or [4.0, -5.0] for name, f in shifters.items()])
    print_table("Time stretch (pitch kept)", [
        (name, f"x{f_:g} time", measure_stretch(f, f_) if f else None)
        for f_ in args.factor or [0.8, 1.25] for name, f in stretchers.items()])


if __name__ == "__main__":
    main()
