"""The song's own mix against the published peak mix, on a song of known parts (remixer.testing.balance).

    .venv/bin/python benchmarks/bench_balance.py [--songs DIR]

The song: the CC BY "Vibe Ace" (its first 20 s, split into drums, bass and other, 9 dB quieter for the first
half) under a sung voice at a known level; the new band: 20 s of the CC BY "Let's Go Fishin'" standing in for the
generated one. The song's separation and the generation are fixed to those (a wiring set-up); madmom finds the
bars, demucs (tiny random weights) separates the new band, beat-sync moves it, the mix balances it, the outputs
are written and read back. Figures, from the output files (BS.1770, pyloudnorm): the remix's vocals-to-band
balance less the song's, over the whole and each half, the kept drums against the singer less the song's (keep),
and the correlation of the band's 3 s loudness with the replaced parts'.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from remixer import audio
from remixer.pipeline import Remixer
from remixer.request import RemixRequest
from remixer.testing import balance as known
from remixer.tiny_weights import write_all

SONGS = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "songs"
# (name, the singer against the band or, with keep, the kept drums against the singer, model, keep)
CASES = [("quiet singer", -10.0, "chord", None), ("loud singer", 3.0, "stereo-chord", None),
         ("keep drums, drums over singer", 5.6, "stereo-chord", "drums"),
         ("keep drums, drums under singer", -7.4, "stereo-chord", "drums")]


def _read(path: Path) -> np.ndarray:
    samples, _ = sf.read(path, always_2d=True, dtype="float64")
    return samples.T


def measure(remixer: Remixer, folder: Path, parts, vocals, band, model: str, keep: str | None,
            balance: str) -> dict[str, float]:
    channels = 2 if model.startswith("stereo") else 1
    song_path = known.write_song(folder, parts, vocals)
    request = RemixRequest.from_inputs(prompt="x", music_input=song_path, seed=1, beat_tracker="madmom",
                                       return_stems=True, model_version=model, keep=keep, mix_balance=balance)
    with known.fixed_song_and_band(remixer, parts, vocals, band, channels):
        result = remixer.remix(request, folder / "out")
    stems = {name: _read(path) for name, path in result.stems.items()}
    played = sum(part for name, part in stems.items() if name != "vocals")
    heard_vocals, heard_band = (audio.convert_channels(x, channels) for x in (vocals, sum(parts.values())))
    row = {name: known.balance_lu(stems["vocals"], played, known.RATE, *bounds)
           - known.balance_lu(heard_vocals, heard_band, known.RATE, *bounds)
           for name, bounds in (("whole", (0.0, known.SECONDS)), ("quiet", known.QUIET_PART),
                                ("loud", known.LOUD_PART))}
    new = sum(part for name, part in stems.items() if name in ("drums", "bass", "other"))
    replaced = sum(part for name, part in parts.items() if name != keep)
    row["kept"] = (known.balance_lu(stems["song_drums"], stems["vocals"], known.RATE)
                   - known.balance_lu(parts["drums"], vocals, known.RATE)) if keep else float("nan")
    row["arc"] = known.arc_correlation(new, known.RATE, replaced, known.RATE)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=Path, default=SONGS, help="the shared songs folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    parts = known.known_parts(args.songs / "vibe_ace.ogg")
    band = known.stand_in_band(args.songs / "lets_go_fishin_0-40s.ogg")
    with tempfile.TemporaryDirectory(prefix="bench-balance-") as root:
        write_all(Path(root) / "weights", seed=0)
        remixer = Remixer(Path(root) / "weights", "cpu", offline=True)
        print("| case | mix_balance | balance error, whole (LU) | quiet half | loud half | kept drums vs singer "
              "| band's 3 s loudness vs the song's (r) |")
        print("|---|---|---|---|---|---|---|")
        for name, level, model, keep in CASES:
            vocals = known.sung_voice(parts["drums"] if keep else sum(parts.values()), -level if keep else level)
            for balance in ("song", "published"):
                row = measure(remixer, Path(root) / f"{name}-{balance}".replace(" ", "_").replace(",", ""),
                              parts, vocals, band, model, keep, balance)
                kept = "-" if np.isnan(row["kept"]) else f"{row['kept']:+.2f}"
                print(f"| {name} ({model}) | {balance} | {row['whole']:+.2f} | {row['quiet']:+.2f} | "
                      f"{row['loud']:+.2f} | {kept} | {row['arc']:.2f} |")


if __name__ == "__main__":
    main()
