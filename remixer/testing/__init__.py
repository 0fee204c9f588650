"""Random checkpoints in the real published file formats, for tests, benchmarks and offline trials.

Nothing in the product imports this package; `python -m remixer.tiny_weights DIR`
writes a whole weights folder with it.
"""
