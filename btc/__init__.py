"""BTC chord recognition (Bi-directional Transformer for Chord recognition, ISMIR 2019).

Our own implementation; loads the official checkpoints unchanged.
"""

from .checkpoint import BTCFormatError, read_checkpoint, write_checkpoint
from .features import SECONDS_PER_FRAME, extract_features
from .model import BTC
from .recognizer import (
    ChordRecognizer,
    ChordSegment,
    frames_to_segments,
    load_model,
    read_lab,
    recognizer_from_package,
    write_lab,
)
from .vocabulary import LARGE_VOCABULARY, MAJMIN_VOCABULARY, vocabulary_for

__all__ = [
    "BTC", "BTCFormatError", "ChordRecognizer", "ChordSegment", "LARGE_VOCABULARY", "MAJMIN_VOCABULARY",
    "SECONDS_PER_FRAME", "extract_features", "frames_to_segments", "load_model", "read_checkpoint",
    "read_lab", "recognizer_from_package", "vocabulary_for", "write_checkpoint", "write_lab",
]
