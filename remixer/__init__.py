"""MusicGen Remixer: remix a song in a new style, keeping its vocals, chords and bars."""

__version__ = "0.1.0"
