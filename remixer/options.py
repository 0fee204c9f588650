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
    parser.add_argument("--weights-mirror", default=None, metavar="URL",
                        help="download model files from this base URL instead of their hosts, keeping their paths "
                             "(default $REMIXER_WEIGHTS_MIRROR; digests and sizes are checked the same way)")


def use_mirror(args: argparse.Namespace) -> bool:
    """--weights-mirror for the whole process (as $REMIXER_WEIGHTS_MIRROR, which workers inherit); False, with
    the reason on stderr, when it is not a URL."""
    import os

    from remixer import weights

    if not args.weights_mirror:
        return True
    try:
        os.environ[weights.MIRROR_ENV] = weights.mirror_base(args.weights_mirror)
    except weights.WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return False
    return True


def setup_logging(level: int = logging.INFO) -> None:
    """Our own lines on stderr, one per stage (transformers' loading bars are off: remixer.models)."""
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
