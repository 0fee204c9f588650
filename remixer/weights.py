"""Model files: one manifest, one directory, download on first use.

Downloads (`remixer.download`) run in parallel byte ranges, resume from a
`.part` file, are checked against a checksum when one is known, and appear
under their final name only when complete (atomic rename), so a crash never
leaves a half file that looks finished.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from remixer import download
from remixer.errors import RemixerError

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "weights"

CC_BY_NC = "CC-BY-NC-4.0"
MIT = "MIT"
APACHE = "Apache-2.0"

_REPLICATE = "https://weights.replicate.delivery/default/musicgen-chord"
_HF = "https://huggingface.co"


class WeightsError(RemixerError, RuntimeError):
    """A model file is missing, unreachable or corrupt."""


@dataclass(frozen=True)
class WeightFile:
    """One model file: where it lives locally and where it comes from."""

    component: str
    name: str  # path relative to the weights directory
    url: str
    licence: str
    sha256: str | None = None  # full digest, or a prefix (demucs publishes 8 hex digits)
    size: int | None = None


def _hf(component: str, repo: str, filename: str, licence: str, local: str | None = None) -> WeightFile:
    return WeightFile(component, local or f"{component}/{filename}",
                      f"{_HF}/{repo}/resolve/main/{filename}", licence)


_ALLIN1_FOLDS = {
    0: "0vra4ys2", 1: "3ozjhtsj", 2: "gmgo0nsy", 3: "i92b7m8p",
    4: "1bql5qo0", 5: "x4z5zeef", 6: "x7t226rq", 7: "qwwskhg6",
}

MANIFEST: tuple[WeightFile, ...] = (
    *(
        WeightFile(f"musicgen-{version}", f"musicgen/musicgen-{version}.th",
                   f"{_REPLICATE}/musicgen-{version}.th", CC_BY_NC)
        for version in ("chord", "chord-large", "stereo-chord", "stereo-chord-large")
    ),
    # MusiConGen (fine-tuned from MusicGen-Melody, so CC-BY-NC like it; its code is MIT): the LM as its export
    # writes it, and a pointer to EnCodec 32 kHz (the "encodec" component below), read only to check that.
    _hf("musicongen", "Cyan0731/MusiConGen", "state_dict.bin", CC_BY_NC),
    _hf("musicongen", "Cyan0731/MusiConGen", "compression_state_dict.bin", CC_BY_NC),
    _hf("encodec", "facebook/encodec_32khz", "config.json", CC_BY_NC),
    _hf("encodec", "facebook/encodec_32khz", "model.safetensors", CC_BY_NC),
    _hf("t5", "google-t5/t5-base", "config.json", APACHE),
    _hf("t5", "google-t5/t5-base", "model.safetensors", APACHE),
    _hf("t5", "google-t5/t5-base", "tokenizer.json", APACHE),
    _hf("mbd", "facebook/multiband-diffusion", "mbd_musicgen_32khz.th", CC_BY_NC),
    WeightFile("htdemucs", "demucs/955717e8-8726e21a.th",
               "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th",
               MIT, sha256="955717e8"),
    *(
        _hf("allin1", "taejunkim/allinone", f"harmonix-fold{fold}-{tag}.pth", MIT)
        for fold, tag in _ALLIN1_FOLDS.items()
    ),
    WeightFile("btc-large-voca", "btc/btc_model_large_voca.pt",
               "https://github.com/jayg996/BTC-ISMIR19/raw/master/test/btc_model_large_voca.pt", MIT),
    WeightFile("btc-majmin", "btc/btc_model.pt",
               "https://github.com/jayg996/BTC-ISMIR19/raw/master/test/btc_model.pt", MIT),
)

COMPONENTS: tuple[str, ...] = tuple(dict.fromkeys(f.component for f in MANIFEST))


def weights_dir(directory: str | os.PathLike | None = None) -> Path:
    """The weights directory: explicit, else $REMIXER_WEIGHTS_DIR, else ./weights."""
    chosen = directory or os.environ.get("REMIXER_WEIGHTS_DIR") or DEFAULT_DIR
    return Path(chosen).expanduser().resolve()


def offline_mode() -> bool:
    """Whether downloads are off for the whole process: REMIXER_OFFLINE=1 (true, yes)."""
    return os.environ.get("REMIXER_OFFLINE", "").lower() in {"1", "true", "yes"}


def files_of(components: Iterable[str]) -> list[WeightFile]:
    """The manifest's files of these components."""
    wanted = list(components)
    unknown = sorted(set(wanted) - set(COMPONENTS))
    if unknown:
        raise WeightsError(f"unknown model component(s) {unknown}; known: {', '.join(COMPONENTS)}")
    return [f for f in MANIFEST if f.component in wanted]


def missing(files: Iterable[WeightFile], directory: str | os.PathLike | None = None) -> list[WeightFile]:
    """Those of `files` not in the weights directory `directory` (a partial download counts as missing)."""
    root = weights_dir(directory)
    return [f for f in files if not (root / f.name).is_file()]


def ensure(
    components: Iterable[str],
    directory: str | os.PathLike | None = None,
    offline: bool | None = None,
    progress: bool = True,
) -> Path:
    """Make sure every file of `components` is present; download what is missing."""
    root = weights_dir(directory)
    absent = missing(files_of(components), root)
    if not absent:
        return root
    if offline if offline is not None else offline_mode():
        raise WeightsError(_offline_message(absent, root))
    fetch_all(absent, root, progress=progress)
    return root


def paths_of(component: str, directory: str | os.PathLike | None = None, offline: bool | None = None
             ) -> list[Path]:
    """The one way a loader finds its files: the component's files in manifest order, fetched first when
    missing (never when offline: then the error lists what is missing and where to get it)."""
    root = ensure([component], directory, offline=offline)
    return [root / f.name for f in files_of([component])]


def _offline_message(absent: list[WeightFile], root: Path) -> str:
    lines = [f"{len(absent)} model file(s) missing from {root} and downloads are off:"]
    lines += [f"  {root / f.name}  <- {f.url}" for f in absent]
    lines.append(
        "Download them there (or run `python -m remixer.weights download`), point "
        "REMIXER_WEIGHTS_DIR at a folder that has them, or for a test run write small "
        "random ones with `python -m remixer.tiny_weights DIR`."
    )
    return "\n".join(lines)


def fetch(file: WeightFile, directory: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Download one file (parallel byte ranges when the server allows, resuming a previous attempt)."""
    return fetch_all([file], directory, progress)[0]


def fetch_all(files: list[WeightFile], directory: str | os.PathLike | None = None,
              progress: bool = True) -> list[Path]:
    """Download several files at once within one connection budget, with one progress bar for the set."""
    root = weights_dir(directory)
    jobs = [download.Job(f.url, root / f.name, f.size, f.sha256) for f in files]
    label = files[0].name if len(files) == 1 else f"{len(files)} model files"

    def bar(total: int | None):
        return tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {label}", disable=not progress,
                    file=sys.stderr)

    try:
        return download.fetch_all(jobs, download.Settings.from_env(), bar)
    except download.DownloadError as error:
        raise WeightsError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    """`python -m remixer.weights`: fetch every file (or those of --only) and report."""
    parser = argparse.ArgumentParser(prog="python -m remixer.weights", description=__doc__)
    parser.add_argument("action", choices=["list", "download"])
    parser.add_argument("components", nargs="*", help=f"default: all ({', '.join(COMPONENTS)})")
    parser.add_argument("--dir", help="weights directory (default $REMIXER_WEIGHTS_DIR or ./weights)")
    parser.add_argument("--offline", action="store_true", help="never touch the network")
    args = parser.parse_args(argv)
    components = args.components or list(COMPONENTS)
    root = weights_dir(args.dir)
    try:
        if args.action == "list":
            absent = set(f.name for f in missing(files_of(components), root))
            for f in files_of(components):
                state = "missing" if f.name in absent else "present"
                print(f"{state:8} {f.component:20} {f.licence:12} {root / f.name}")
        else:
            ensure(components, root, offline=args.offline)
            print(f"all files present in {root}")
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
