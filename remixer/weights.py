"""Model files: one manifest, one directory, download on first use.

Downloads resume from a `.part` file, are checked against a checksum when one
is known, and appear under their final name only when complete (atomic rename),
so a crash never leaves a half file that looks finished.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "weights"
_CHUNK = 1 << 20
_TIMEOUT_S = 60

CC_BY_NC = "CC-BY-NC-4.0"
MIT = "MIT"
APACHE = "Apache-2.0"

_REPLICATE = "https://weights.replicate.delivery/default/musicgen-chord"
_HF = "https://huggingface.co"


class WeightsError(RuntimeError):
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
    return os.environ.get("REMIXER_OFFLINE", "").lower() in {"1", "true", "yes"}


def files_of(components: Iterable[str]) -> list[WeightFile]:
    wanted = list(components)
    unknown = sorted(set(wanted) - set(COMPONENTS))
    if unknown:
        raise WeightsError(f"unknown model component(s) {unknown}; known: {', '.join(COMPONENTS)}")
    return [f for f in MANIFEST if f.component in wanted]


def missing(files: Iterable[WeightFile], directory: str | os.PathLike | None = None) -> list[WeightFile]:
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
    for file in absent:
        fetch(file, root, progress=progress)
    return root


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
    """Download one file, resuming a previous partial download."""
    target = weights_dir(directory) / file.name
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(file.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            if have and response.status != 206:  # server ignored the range: start over
                have = 0
            total = _total_size(response, have) or file.size
            with open(part, "ab" if have else "wb") as out, tqdm(
                total=total, initial=have, unit="B", unit_scale=True,
                desc=f"downloading {file.name}", disable=not progress, file=sys.stderr,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            # http.client ends a cut connection as a short read, not an error.
            expected = _total_size(response, have)
            if expected is not None and part.stat().st_size < expected:
                raise ConnectionError(f"connection closed after {part.stat().st_size} of {expected} bytes")
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # range past the end: the part is complete
            pass
        else:
            raise WeightsError(f"could not download {file.name} from {file.url}: HTTP {error.code}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise WeightsError(
            f"could not download {file.name} from {file.url}: {error}. "
            f"The partial file {part} is kept; run again to resume."
        ) from None
    _verify(file, part)
    os.replace(part, target)
    log.info("downloaded %s", target)
    return target


def _total_size(response, have: int) -> int | None:
    length = response.headers.get("Content-Length")
    return int(length) + have if length is not None else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(file: WeightFile, part: Path) -> None:
    if file.size is not None and part.stat().st_size != file.size:
        size = part.stat().st_size
        part.unlink()
        raise WeightsError(f"{file.name}: downloaded {size} bytes, expected {file.size}; deleted, try again.")
    if file.sha256 is None:
        return
    actual = sha256_of(part)
    if not actual.startswith(file.sha256):
        part.unlink()
        raise WeightsError(
            f"{file.name}: checksum mismatch (sha256 {actual[:16]}..., expected {file.sha256[:16]}...); "
            "the download was deleted, try again."
        )


def main(argv: list[str] | None = None) -> int:
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
