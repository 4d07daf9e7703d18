"""Two columns of a table file, for a direction test on a user's own data.

:func:`read_columns` reads a CSV file (comma-separated, the first line a header or data) or a
whitespace-separated table (the format of the Tuebingen pairs), and picks two columns by header
name or 0-based index. A first line with any field that is not a number is a header. Every
problem (an empty file, one column, a missing name, an index out of range, a ragged line, a
non-numeric or non-finite value) is a :class:`~edgecompress.errors.CausalInputError` naming the
file and the column.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import CausalInputError
from .inputs import as_column


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank line: CSV when the first one has a comma."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise CausalInputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise CausalInputError(f"{path}: empty file; expected a CSV or whitespace-separated "
                               "table with at least two columns")
    if "," in lines[0][1]:
        parsed = csv.reader([line for _, line in lines], skipinitialspace=True)
        return [(number, [f.strip() for f in fields])
                for (number, _), fields in zip(lines, parsed)]
    return [(number, line.split()) for number, line in lines]


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _index(path: Path, column: str | int, header: list[str] | None, width: int) -> int:
    """The 0-based index of ``column``: a header name (first), else an index."""
    if header is not None and str(column) in header:
        return header.index(str(column))
    try:
        index = int(column)
    except ValueError:
        known = f"columns: {', '.join(header)}" if header else "the file has no header line"
        raise CausalInputError(f"{path}: no column named {column!r} ({known}; or give a 0-based "
                               "index)") from None
    if not 0 <= index < width:
        raise CausalInputError(f"{path}: column index {index} out of range; the file has "
                               f"{width} columns (indices 0-{width - 1})")
    return index


def read_columns(path: str | Path, x: str | int | None = None, y: str | int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, tuple[str, str]]:
    """Columns ``x`` and ``y`` (header names or 0-based indices; default the first two) of the
    table in ``path`` as finite float arrays, with their names (the header's, else
    ``"column i"``)."""
    path = Path(path)
    rows = _rows(path)
    header = rows[0][1] if not all(_is_number(f) for f in rows[0][1]) else None
    data = rows[1:] if header is not None else rows
    width = len(rows[0][1])
    if width < 2:
        raise CausalInputError(f"{path}: one column (line {rows[0][0]}); need two, the "
                               "candidate cause and effect (is the separator a comma or "
                               "whitespace?)")
    if not data:
        raise CausalInputError(f"{path}: a header line and no data rows")
    ix = _index(path, 0 if x is None else x, header, width)
    iy = _index(path, 1 if y is None else y, header, width)
    names = tuple(header[i] if header is not None else f"column {i}" for i in (ix, iy))
    if ix == iy:
        raise CausalInputError(f"{path}: x and y are the same column ({names[0]!r}); choose two")
    columns = []
    for index, name in zip((ix, iy), names):
        label = f"{path}: column {name!r}" if header is not None else f"{path}: {name}"
        values = []
        for number, fields in data:
            if len(fields) != width:
                raise CausalInputError(f"{path}: line {number} has {len(fields)} fields, the "
                                       f"first line {width}")
            if not _is_number(fields[index]):
                raise CausalInputError(f"{label} is not numeric: line {number} has "
                                       f"{fields[index][:40]!r}")
            values.append(float(fields[index]))
        columns.append(as_column(values, label))
    return columns[0], columns[1], (names[0], names[1])
