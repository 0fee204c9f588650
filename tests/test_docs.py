"""The README and docs/ as a reader meets them: short, every link landing, every page saying who it is for,
the input table made from the input table, and the tool that checked the split finds a dropped sentence."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but hyphens and underscores dropped, spaces ->
    hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_the_readme_is_for_a_five_minute_read():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_every_link_between_the_pages_lands_on_a_file_and_a_heading():
    checked = 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # an outside address
            path, _, anchor = target.partition("#")
            destination = (page.parent / path).resolve() if path else page
            assert destination.exists(), (page.name, target)
            if anchor:
                assert anchor in _anchors(destination), (page.name, target, sorted(_anchors(destination)))
            checked += 1
    assert checked >= 30  # the README links every page, the pages link each other


def test_every_doc_says_first_who_it_is_for_and_the_readme_links_it():
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        lines = page.read_text().splitlines()
        assert lines[0].startswith("# ") and lines[2].startswith("*For "), page.name
        assert f"(docs/{page.name})" in readme, page.name


def test_the_readme_input_table_is_the_input_table():
    from remixer.request import INPUTS

    done = subprocess.run([sys.executable, "tools/write_input_table.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    table = (ROOT / "README.md").read_text()
    assert all(f"| `{spec.name}` |" in table for spec in INPUTS)


def test_the_split_checker_lists_a_dropped_sentence_and_a_changed_cell():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import moved_text
    finally:
        sys.path.remove(str(ROOT / "tools"))
    old = ("# Title\n\nFirst sentence stays. Second sentence goes.\n\n"
           "| a | b |\n|---|---|\n| kept cell | 12 s per minute |\n\n```sh\n./run.sh test\n```\n")
    now = "# Title\n\nFirst sentence\nstays.\n\n| kept cell | 13 s per minute |\n\n    ./run.sh test\n"
    assert moved_text.missing(old, now) == ["Second sentence goes.", "12 s per minute"]
