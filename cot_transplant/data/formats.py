"""The three file formats as tables of text cells, before any typing or checking.

- `.csv`: the original format. Newlines inside texts are escaped as the two characters
  `\\n` (undone by `unescape`); ROW is the 1-based line number where the row starts
  (the header is line 1).
- `.jsonl`: one JSON object per line, keys are column names; ROW is the line number,
  i.e. the record number when there are no blank lines.
- `.parquet`: ROW is the 1-based row number.

Reading never raises on bad content: structural problems become `Problem`s keyed by
ROW so a caller can list them all or skip the rows. Only a file that cannot be read
at all raises `FileProblem`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
BOM = "\ufeff"


@dataclass(frozen=True)
class Problem:
    """One finding, printed as `FILE:ROW: column 'X': message` (ROW and column when known)."""

    path: str
    row: int | None
    column: str | None
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = self.path if self.row is None else f"{self.path}:{self.row}"
        column = f" column '{self.column}':" if self.column is not None else ""
        text = f"{where}:{column} {'warning: ' if self.warning else ''}{self.message}"
        # Undecodable bytes travel as lone surrogates; print them as escapes, never crash on them.
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class FileProblem(Exception):
    """The file cannot be read as a table at all (missing, a directory, not Parquet, empty)."""


@dataclass
class RawRow:
    """One row as text cells. `cells` is None when the row could not be split into columns;
    `index` is the 0-based data row index, None for a repeated header line (not data)."""

    row: int
    cells: dict[str, str] | None
    index: int | None


@dataclass
class Table:
    path: str
    fmt: str
    columns: list[str]
    header_row: int | None  # the ROW of the header line (CSV), None where names come from keys
    rows: list[RawRow] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def escape(text: str) -> str:
    """Original CSV escaping: a newline becomes the two characters `\\n`."""
    return text.replace("\n", "\\n")


def unescape(text: str) -> str:
    """Undo `escape`. Lossy for a text holding a literal backslash before `n`: it comes back a newline."""
    return text.replace("\\n", "\n")


def format_of(path: str | os.PathLike) -> str:
    """'csv', 'jsonl' or 'parquet' from the extension.

    Raises:
        FileProblem: an unknown extension.
    """
    ext = Path(path).suffix.lower()
    if ext not in EXTENSIONS:
        raise FileProblem(f"unknown format '{ext or Path(path).name}': use a .csv, .jsonl or .parquet file")
    return EXTENSIONS[ext]


def read_table(path: str | os.PathLike) -> Table:
    """Parse a file into a `Table` of text cells.

    Raises:
        FileProblem: missing path, directory, unknown extension, unreadable or empty file.
    """
    p = Path(path)
    if not p.exists():
        raise FileProblem("no such file")
    if p.is_dir():
        raise FileProblem("is a directory; give a .csv, .jsonl or .parquet file")
    fmt = format_of(p)
    if fmt == "parquet":
        return _read_parquet(p)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise FileProblem(f"cannot read: {exc.strerror or exc}") from None
    # Bad bytes become lone surrogates, so every row still parses and the check can name the row.
    text = data.decode("utf-8", "surrogateescape").removeprefix(BOM)
    if not text.strip():
        raise FileProblem("empty file" + (" (expected a header line)" if fmt == "csv" else " (no records)"))
    return _read_csv(str(path), text) if fmt == "csv" else _read_jsonl(str(path), text)


def _lines(text: str) -> Iterator[str]:
    """Lines split at '\\n' only, ends kept: a lone '\\r' or U+2028 inside a text is not a line break."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _csv_message(exc: csv.Error) -> str:
    msg = str(exc)
    if "unexpected end of data" in msg:
        return "unterminated quote: a quoted field opened in this row never closes"
    if "expected after" in msg:
        return "malformed quoting: a closing quote must be followed by a comma or the end of the line"
    if "new-line character seen in unquoted field" in msg:
        return "a carriage return inside an unquoted field; quote the field"
    return f"malformed CSV: {msg}"


def _read_csv(path: str, text: str) -> Table:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # the default 131,072 refuses long fields
    reader = csv.reader(_lines(text), strict=True)
    table = Table(path, "csv", [], None)
    start, index = 1, 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if table.header_row is None:
                raise FileProblem(f"line {start}: {_csv_message(exc)}") from None
            table.problems.append(Problem(path, start, None, _csv_message(exc)))
            table.rows.append(RawRow(start, None, index))
            index += 1
            start = reader.line_num + 1
            continue
        row, end = start, reader.line_num
        start = end + 1
        if not cells:  # a blank line
            continue
        if table.header_row is None:
            table.columns, table.header_row = cells, row
            continue
        if cells == table.columns:
            table.problems.append(Problem(path, row, None, "repeated header line (the original generator wrote "
                                                           "one at every restart); delete the line"))
            table.rows.append(RawRow(row, None, None))
            continue
        if len(cells) != len(table.columns):
            many = "too many" if len(cells) > len(table.columns) else "too few"
            span = f"; the row spans lines {row}-{end}: an unbalanced quote?" if end > row else ""
            table.problems.append(Problem(path, row, None, f"{len(cells)} fields, expected "
                                                           f"{len(table.columns)} ({many}){span}"))
            table.rows.append(RawRow(row, None, index))
        else:
            table.rows.append(RawRow(row, dict(zip(table.columns, cells)), index))
        index += 1
    if table.header_row is None:
        raise FileProblem("no header line")
    return table


def _cell_text(value: object) -> str:
    """A JSON or Parquet value as the text a CSV cell would hold: None -> '', True -> 'True', 47.0 -> '47.0'."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _cells(obj: dict) -> dict[str, str]:
    """Text cells of a JSON object or Parquet row; a null is an absent cell, as a missing key is."""
    return {str(k): _cell_text(v) for k, v in obj.items() if v is not None}


def _read_jsonl(path: str, text: str) -> Table:
    table = Table(path, "jsonl", [], None)
    seen: dict[str, None] = {}
    index = 0
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            msg = getattr(exc, "msg", str(exc))
            table.problems.append(Problem(path, number, None, f"not valid JSON: {msg}"))
            table.rows.append(RawRow(number, None, index))
        else:
            if isinstance(obj, dict):
                seen.update(dict.fromkeys(obj))
                table.rows.append(RawRow(number, _cells(obj), index))
            else:
                table.problems.append(Problem(path, number, None, f"expected a JSON object, got {type(obj).__name__}"))
                table.rows.append(RawRow(number, None, index))
        index += 1
    table.columns = list(seen)
    return table


def _read_parquet(p: Path) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        arrow = pq.read_table(p)
    except (pa.ArrowException, OSError) as exc:
        raise FileProblem(f"not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    table = Table(str(p), "parquet", list(arrow.column_names), None)
    for i, row in enumerate(arrow.to_pylist()):
        table.rows.append(RawRow(i + 1, _cells(row), i))
    return table


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same directory, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_NEEDS_QUOTES = re.compile(r'[,"\r\n]')


def csv_line(cells: list[str]) -> str:
    """One line in the original writer's dialect (Python's csv, minimal quoting, '\\n' line ends).

    Unlike `csv.writer`, a field holding a carriage return is quoted too, so that it reads back.
    """
    return ",".join('"' + c.replace('"', '""') + '"' if _NEEDS_QUOTES.search(c) else c for c in cells) + "\n"


def write_csv(path: str | os.PathLike, header: list[str], rows: list[list[str]]) -> None:
    """The original format: minimal quoting, '\\n' line ends, UTF-8 without BOM."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            out = csv.writer(f, lineterminator="\n")
            for row in [header, *rows]:
                # csv.writer leaves a lone carriage return unquoted; such rare rows go through csv_line.
                if "\r" in "".join(row):
                    f.write(csv_line(row))
                else:
                    out.writerow(row)

    _atomic_write(Path(path), write)


def write_jsonl(path: str | os.PathLike, objects: list[dict]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            for obj in objects:
                f.write(json.dumps(obj, ensure_ascii=False) + "\n")

    _atomic_write(Path(path), write)


def write_parquet(path: str | os.PathLike, columns: dict[str, list], bool_columns: tuple[str, ...] = ()) -> None:
    """Text columns as Arrow strings; `bool_columns` as nullable booleans."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {name: pa.array(values, pa.bool_() if name in bool_columns else pa.string())
              for name, values in columns.items()}
    _atomic_write(Path(path), lambda tmp: pq.write_table(pa.table(arrays), tmp))
