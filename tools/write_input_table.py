"""Write the README's input table from the one input table (remixer.request.INPUTS), as the schema is written.

    .venv/bin/python tools/write_input_table.py          # rewrite the table between the README's markers
    .venv/bin/python tools/write_input_table.py --check  # exit 1 when the README's table is stale

The Cog schema, the CLI's flags, the batch columns and the page are made from INPUTS; this keeps the README's
table from it too, so that a new input or a changed default cannot be missing from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BEGIN = "<!-- inputs: written by tools/write_input_table.py from remixer.request.INPUTS; do not edit by hand -->"
END = "<!-- /inputs -->"


def _accepted(spec) -> str:
    if spec.choices:
        return ", ".join(f"`{choice}`" for choice in spec.choices)
    if spec.type is bool:
        return "true, false"
    if spec.type is Path:
        return "a file (an upload, or a URL through Cog)"
    if spec.ge is not None and spec.le is not None:
        return f"{spec.ge:g} to {spec.le:g}"
    if spec.ge is not None:
        return f">= {spec.ge:g}"
    return {str: "text", int: "a whole number", float: "a number"}[spec.type]


def _default(spec) -> str:
    if spec.required:
        return "required"
    if spec.default is None:
        return "unset"
    if isinstance(spec.default, bool):
        return f"`{str(spec.default).lower()}`"
    return f"`{spec.default}`"


def table() -> str:
    """The markdown table of every input, in the predictor's order."""
    from remixer.request import INPUTS

    rows = ["| input | default | accepted | what it does |", "|---|---|---|---|"]
    for spec in INPUTS:
        rows.append(f"| `{spec.name}` | {_default(spec)} | {_accepted(spec)} | {spec.description.replace('|', '/')} |")
    return "\n".join(rows)


def rewritten(text: str) -> str:
    """`text` with the table between the markers replaced by the current one."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README.name} has no input-table markers ({BEGIN} ... {END})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the README's table is stale")
    args = parser.parse_args(argv)
    text = README.read_text()
    fresh = rewritten(text)
    if args.check:
        if fresh != text:
            print("README.md's input table is stale: run tools/write_input_table.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
