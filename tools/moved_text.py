"""Which sentences of an old README are not, word for word, in the README and docs/ now.

    python tools/moved_text.py 87b010e           # the README at that commit against README.md + docs/*.md

A restructure moves text; this lists what did not move verbatim (whitespace aside), so that each rewritten
sentence can be read against its new wording and nothing true is lost. Units: each sentence of a paragraph or
list item, each cell of a table row, each line of a code block.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`*(\[\"])")


def _flat(text: str) -> str:
    return " ".join(text.split())


def units(markdown: str) -> list[str]:
    """The sentences, table cells and code lines of a markdown text, whitespace collapsed."""
    found: list[str] = []
    paragraph: list[str] = []
    in_code = False

    def flush() -> None:
        if paragraph:
            found.extend(_SENTENCE_END.split(_flat(" ".join(paragraph))))
            paragraph.clear()

    for line in markdown.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            in_code = not in_code
        elif in_code:
            found.append(_flat(stripped))
        elif stripped.startswith("|"):
            flush()
            if not set(stripped) <= set("|-: "):  # not the header's separator row
                found.extend(cell.strip() for cell in stripped.strip("|").split(" | "))
        elif not stripped or stripped.startswith("#"):
            flush()
            if stripped:
                found.append(_flat(stripped.lstrip("#")))
        elif re.match(r"^([-*]|\d+\.) ", stripped):
            flush()
            paragraph.append(re.sub(r"^([-*]|\d+\.) ", "", stripped))
        else:
            paragraph.append(stripped)
    flush()
    return [unit for unit in found if len(unit) > 3]


def missing(old: str, now: str) -> list[str]:
    """Units of `old` that `now` does not contain (whitespace collapsed on both sides)."""
    target = _flat(now)
    return [unit for unit in units(old) if unit not in target]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="the commit whose README.md is the old text")
    args = parser.parse_args(argv)
    old = subprocess.run(["git", "show", f"{args.commit}:README.md"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    now = "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    gone = missing(old, now)
    for unit in gone:
        print(f"- {unit}")
    total = len(units(old))
    print(f"{total - len(gone)} of {total} units found word for word; {len(gone)} not", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
