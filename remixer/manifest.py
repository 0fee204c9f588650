"""A batch manifest: one remix per row, in CSV or JSON Lines, checked whole before any work starts.

Columns are the prediction inputs (remixer.request.INPUTS) plus an optional `id`; an empty cell (or a
JSON null) leaves an input at its default. Relative song paths are read from the manifest's folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from remixer.errors import RemixerError
from remixer.request import SPECS, RemixRequest

ID_COLUMN = "id"
COLUMNS = (ID_COLUMN, *SPECS)
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RESERVED_IDS = {"results.jsonl"}


class ManifestError(RemixerError):
    """A manifest that cannot run; the message names every problem with its row."""


@dataclass(frozen=True)
class Row:
    number: int  # 1 for the first remix in the file
    id: str  # the row's output folder under the batch's --out
    request: RemixRequest
    input_hash: str  # what makes two runs of this row the same work (inputs and the song file)


def read_manifest(path: str | Path) -> list[Row]:
    """Every row of a CSV (.csv) or JSON Lines (.jsonl, .json) manifest, valid, or ManifestError."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"no manifest at {path}")
    problems: list[str] = []
    raw = list(_rows(path, problems))
    if not raw and not problems:
        problems.append("the manifest has no rows")
    rows = []
    for number, where, values in raw:
        row, row_problems = _row(number, values, path.parent)
        problems += [f"row {number} ({where}): {problem}" for problem in row_problems]
        if row is not None:
            rows.append(row)
    problems += _id_problems(raw, rows)
    if problems:
        raise ManifestError(f"{path.name} has {len(problems)} problem(s), nothing was run:\n  "
                            + "\n  ".join(problems))
    return rows


def _rows(path: Path, problems: list[str]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(row number, 'line N', values) for each remix in the file; unknown columns become problems."""
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".jsonl", ".json"}:
        raise ManifestError(f"{path.name}: a manifest is a .csv or .jsonl file, got {suffix or 'no extension'!r}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError(f"{path.name} is not UTF-8 text ({error.reason})") from None
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        header = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = header
        unknown = [name for name in header if name not in COLUMNS]
        if unknown:
            problems.append(f"header (line 1): unknown column(s) {unknown}; accepted: {', '.join(COLUMNS)}")
        for number, values in enumerate(reader, start=1):
            if None in values:  # more cells than header columns
                problems.append(f"row {number} (line {reader.line_num}): more cells than the header's "
                                f"{len(header)} columns")
            cells = {name: value.strip() for name, value in values.items() if name in COLUMNS and value}
            yield number, f"line {reader.line_num}", {k: v for k, v in cells.items() if v}
        return
    number = 0
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        number += 1
        try:
            values = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"row {number} (line {line_number}): not JSON ({error.msg})")
            continue
        if not isinstance(values, dict):
            problems.append(f"row {number} (line {line_number}): a row is a JSON object, got "
                            f"{type(values).__name__}")
            continue
        unknown = sorted(set(values) - set(COLUMNS))
        if unknown:
            problems.append(f"row {number} (line {line_number}): unknown column(s) {unknown}; accepted: "
                            f"{', '.join(COLUMNS)}")
        yield number, f"line {line_number}", {k: v for k, v in values.items() if k in COLUMNS and v is not None}


def _row(number: int, values: dict[str, Any], base: Path) -> tuple[Row | None, list[str]]:
    inputs = {name: value for name, value in values.items() if name != ID_COLUMN}
    if isinstance(inputs.get("music_input"), str):
        song = Path(inputs["music_input"]).expanduser()
        inputs["music_input"] = song if song.is_absolute() else (base / song).resolve()
    request, problems = RemixRequest.check(inputs)
    if request is None:  # the song's whole path: the single-request message names the file only
        song = inputs.get("music_input")
        return None, [f"music_input: no such file {song}" if p.startswith("music_input: no such file") else p
                      for p in problems]
    row_id = str(values.get(ID_COLUMN, "")).strip() or _default_id(request.music_input, number)
    return Row(number, row_id, request, input_hash(request)), []


def _default_id(song: Path, number: int) -> str:
    """The song's name, made safe for a folder, with the row number so two rows of one song differ."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(song).stem).strip("-._") or "song"
    return f"{number:04d}-{stem[:80]}"


def _id_problems(raw: list[tuple[int, str, dict]], rows: list[Row]) -> list[str]:
    problems = []
    first: dict[str, int] = {}
    given = {number: str(values.get(ID_COLUMN, "")).strip() for number, _, values in raw}
    for number, _, _ in raw:
        row_id = given[number]
        if not row_id:
            continue
        if not _SAFE_ID.match(row_id) or row_id in RESERVED_IDS:
            problems.append(f"row {number}: id {row_id!r} must be letters, digits, '.', '_' or '-' "
                            "(100 at most, not starting with '.', '_' or '-'), and not results.jsonl")
        elif row_id in first:
            problems.append(f"row {number}: id {row_id!r} is already used by row {first[row_id]}")
        else:
            first[row_id] = number
    taken = set(first)
    for row in rows:  # a default id equal to a given one
        if not given[row.number] and row.id in taken:
            problems.append(f"row {row.number}: its default id {row.id!r} is used by another row; give it an id")
    return problems


def input_hash(request: RemixRequest) -> str:
    """Same hash, same work: every input, and the song file's size and modification time (an edited or
    replaced song is remixed again)."""
    values = asdict(request)
    song = Path(request.music_input)
    stat = song.stat()
    values["music_input"] = {"path": str(song.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
