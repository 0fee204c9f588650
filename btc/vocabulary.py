"""BTC's two chord vocabularies (class index -> label)."""

from __future__ import annotations

ROOTS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Order of qualities inside each root's block of the large vocabulary.
LARGE_QUALITIES = ("min", "maj", "dim", "aug", "min6", "maj6", "min7", "minmaj7",
                   "maj7", "7", "dim7", "hdim7", "sus2", "sus4")


def _name(root: str, quality: str) -> str:
    return root if quality == "maj" else f"{root}:{quality}"


LARGE_VOCABULARY: tuple[str, ...] = (
    *(_name(root, q) for root in ROOTS for q in LARGE_QUALITIES), "X", "N",
)
MAJMIN_VOCABULARY: tuple[str, ...] = (
    *(_name(root, q) for root in ROOTS for q in ("maj", "min")), "N",
)


def vocabulary_for(num_classes: int) -> tuple[str, ...]:
    for vocabulary in (LARGE_VOCABULARY, MAJMIN_VOCABULARY):
        if len(vocabulary) == num_classes:
            return vocabulary
    raise ValueError(f"a BTC checkpoint has 170 or 25 output classes, not {num_classes}")
