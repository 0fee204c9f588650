"""MusicGen Remixer: remix a song in a new style, keeping its vocals, chords and bars.

    from remixer import Remixer, RemixRequest, RemixResult, RemixerError
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Remixer", "RemixRequest", "RemixResult", "RemixerError"]

# Imported on first use: `import remixer.weights` (or the CLI's --help) must not load torch and transformers.
_HOMES = {"Remixer": "remixer.pipeline", "RemixResult": "remixer.pipeline", "RemixRequest": "remixer.request",
          "RemixerError": "remixer.errors"}

if TYPE_CHECKING:
    from remixer.errors import RemixerError
    from remixer.pipeline import Remixer, RemixResult
    from remixer.request import RemixRequest


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'remixer' has no attribute {name!r}")
