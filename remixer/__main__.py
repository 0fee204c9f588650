"""`python -m remixer`: the remix command line (lands with the pipeline issue)."""

import sys

MESSAGE = (
    "musicgen-remix: the remix pipeline is not complete yet.\n"
    "Landed so far: audio I/O and normalization (remixer.audio), the weights manager\n"
    "(python -m remixer.weights), chord recognition (btc), chord chroma (remixer.chords),\n"
    "beat-sync (remixer.beatsync) and mixing (remixer.mix).\n"
    "Separation, rhythm analysis, generation and the CLI land in later issues;\n"
    "no remix is produced until then."
)


def main() -> int:
    print(MESSAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
