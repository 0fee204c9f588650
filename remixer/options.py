"""What the three commands (remix, batch, app) share: where the models come from and run, and the log.

Apart from `remixer.cli`, which dispatches to the app, so that the app reads these without importing it.
"""

from __future__ import annotations

import argparse
import logging
import sys


def add_setup_flags(parser: argparse.ArgumentParser, device: bool = True,
                    weights_help: str = "missing files are downloaded") -> None:
    """--weights-dir, --device and --offline: where the models come from and run (remix, batch, app)."""
    parser.add_argument("--weights-dir", default=None, help="model weights folder (default $REMIXER_WEIGHTS_DIR "
                        f"or ./weights; {weights_help})")
    if device:
        parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--offline", action="store_true", help="never download weights")


def setup_logging(level: int = logging.INFO) -> None:
    """Our own lines on stderr, one per stage (transformers' loading bars are off: remixer.models)."""
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
