"""The one cell escaper: every CSV, label list and Markdown table the project writes goes through it.

Label names come from places a user controls (a CSV column, a folder name, a corpus source),
and the files that carry them (``manifest.csv``, ``predictions.csv``, ``history.csv``,
``labels.txt``, ``report.md``, the model card) are opened by people in spreadsheets. A cell that
starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula there
(``=cmd|' /C calc'!A0``), so, following OWASP's CSV-injection rule, such a cell is written with a
leading ``'``: the spreadsheet shows the text and runs nothing.

The escape is undone by the readers the project uses for its own files (:func:`read_csv`,
:func:`read_lines`), so machine files round-trip exactly: :func:`unescape_cell` inverts
:func:`escape_cell` on every string. To make that true for a name that itself starts with ``'``
before a trigger (``'=x``), any cell whose leading quotes hide a trigger gets one more quote.

Numbers are never escaped: a number (``-0.5`` in a probability or loss column), or a string that
is a plain decimal number (history rows read back and written again), is not a formula, and is
written as it is. Markdown cells (:func:`md_cell`) are escaped the same way and
their ``|`` becomes ``\\|``, so a label cannot open a new table column.

Standard library plus pandas (imported inside the frame helpers); no TensorFlow.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pipelines.fs import atomic_path

__all__ = ["TRIGGERS", "escape_cell", "md_cell", "read_csv", "read_lines", "read_rows",
           "unescape_cell", "write_csv", "write_frame", "write_lines"]

# A cell starting with one of these is a formula (or a DDE call) in Excel, LibreOffice, Sheets.
TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


# A plain decimal number ("-0.5", "+3", "1e-4"): a spreadsheet reads it as a number, not a formula.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _needs_quote(text: str) -> bool:
    bare = text.lstrip("'")
    return bare.startswith(TRIGGERS) and _NUMBER.fullmatch(bare) is None


def escape_cell(value):
    """``value`` as a spreadsheet shows it without running it: a string whose first character
    (after any leading ``'``) is a formula trigger, and which is not a plain decimal number,
    gets one leading ``'``; anything else, numbers included, is returned unchanged."""
    if isinstance(value, str) and _needs_quote(value):
        return "'" + value
    return value


def unescape_cell(value):
    """The inverse of :func:`escape_cell` (a string it did not escape is returned unchanged)."""
    if isinstance(value, str) and value.startswith("'") and _needs_quote(value):
        return value[1:]
    return value


def md_cell(value) -> str:
    """A Markdown table cell: escaped as a CSV cell, ``|`` as ``\\|``, line breaks as spaces."""
    text = str(escape_cell(str(value)))
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping | Sequence], fields: Sequence[str]) -> Path:
    """Write ``rows`` (dicts keyed by ``fields``, or sequences in that order) under a header of
    ``fields`` to ``path`` atomically, every cell through :func:`escape_cell`."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([escape_cell(str(f)) for f in fields])
        for row in rows:
            cells = [row.get(f, "") for f in fields] if isinstance(row, Mapping) else list(row)
            writer.writerow([escape_cell(c) for c in cells])
    return Path(path)


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a CSV :func:`write_csv` wrote, as dicts of strings, escapes undone."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [unescape_cell(f) for f in next(reader, [])]
        return [dict(zip(header, (unescape_cell(c) for c in row))) for row in reader]


def write_frame(frame, path: str | os.PathLike, **to_csv) -> Path:
    """``frame.to_csv(path, index=False, **to_csv)`` atomically, with the column names and every
    string cell through :func:`escape_cell` (numeric columns untouched)."""
    frame = frame.rename(columns=lambda c: escape_cell(str(c)))
    text_columns = _text_columns(frame)
    if text_columns:
        frame = frame.assign(**{c: frame[c].map(escape_cell) for c in text_columns})
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, **to_csv)
    return Path(path)


def read_csv(path, **kwargs):
    """``pandas.read_csv`` with the escapes of :func:`write_frame` undone (column names and
    string cells): the one reader of the CSVs the project writes."""
    import pandas as pd

    frame = pd.read_csv(path, **kwargs)
    frame.columns = [unescape_cell(c) for c in frame.columns]
    for column in _text_columns(frame):
        frame[column] = frame[column].map(unescape_cell)
    return frame


def _text_columns(frame) -> list:
    """The columns that may hold strings (object or pandas' string dtype), not numbers."""
    import pandas as pd

    return [c for c in frame.columns
            if not (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))]


def write_lines(path: str | os.PathLike, lines: Iterable) -> Path:
    """One escaped cell a line (``labels.txt``), atomically."""
    text = "".join(f"{escape_cell(str(line))}\n" for line in lines)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_lines(path: str | os.PathLike) -> list[str]:
    """The non-empty lines of a file :func:`write_lines` wrote, escapes undone."""
    text = Path(path).read_text(encoding="utf-8")
    return [unescape_cell(line) for line in text.splitlines() if line]
