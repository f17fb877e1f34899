"""Records in and out of files: the original CSV, JSONL and Parquet, chosen by extension.

Reading applies every rule of `validate`; texts in memory hold real newlines (the CSV
format escapes them). JSONL and Parquet keep any text losslessly; the CSV format holds
any text without a backslash (see `formats.unescape`).
"""

from __future__ import annotations

import os
import sys

from cot_transplant.data.formats import FileProblem, escape, format_of, unescape, write_csv, write_jsonl, write_parquet
from cot_transplant.data.record import CHOICE_COLUMNS, COLUMNS, PAIR_COLUMNS, Record
from cot_transplant.data.validate import DEFAULT_MAX_FIELD_CHARS, check_file
from cot_transplant.errors import UserError

SWAPPED = "Choice Answers Swapped"


def _fail(report, skip_invalid_helps: bool) -> UserError:
    first = report.problems[0]
    rest = len(report.problems) - 1
    more = f" (and {rest} more problem{'s' * (rest > 1)})" if rest else ""
    if not skip_invalid_helps:
        return UserError(f"{first}{more}")
    n = len(report.bad_rows)
    return UserError(f"{first}{more}; `cot-transplant data validate {report.path}` lists them all, "
                     f"--skip-invalid (data.skip_invalid=true) skips the {n} bad row{'s' * (n > 1)}")


def _to_record(cells: dict[str, str], index: int, csv_escaped: bool) -> Record:
    text = unescape if csv_escaped else str
    choice = {c: cells.get(c, "") for c in CHOICE_COLUMNS}
    has_choice = all(v.strip() for v in choice.values())
    return Record(
        question=text(cells["Question"]),
        correct_answer=cells["Correct Answer"],
        correct_argument=text(cells["Correct Argument"]),
        incorrect_answer=cells["Incorrect Answer"],
        incorrect_argument=text(cells["Incorrect Argument"]),
        choice_answer=choice["Choice Answer"] if has_choice else None,
        choice_argument=text(choice["Choice Argument"]) if has_choice else None,
        swapped=choice[SWAPPED] == "True" if has_choice else None,
        row_id=index,
        extra={k: text(v) for k, v in cells.items() if k not in COLUMNS},
    )


def read_records(path: str | os.PathLike, *, require_choice: bool = True, skip_invalid: bool = False,
                 max_field_chars: int = DEFAULT_MAX_FIELD_CHARS) -> list[Record]:
    """Read a .csv (original format), .jsonl or .parquet dataset, checked as `data validate` checks it.

    `Record.row_id` is the 0-based data row index in the file; columns beyond the original
    eight go to `Record.extra`, in file order.

    Raises:
        UserError: the file breaks a rule (first problem, with a hint), is a pairs file while
            `require_choice`, or (with `skip_invalid`) has no valid row left.
    """
    report = check_file(path, require_choice=require_choice, max_field_chars=max_field_chars)
    if report.fatal:
        raise _fail(report, skip_invalid_helps=False)
    if report.problems and not skip_invalid:
        raise _fail(report, skip_invalid_helps=True)
    bad = report.bad_rows
    table = report.table
    records = [_to_record(r.cells, r.index, table.fmt == "csv") for r in table.rows
               if r.cells is not None and r.index is not None and r.row not in bad]
    skipped = len(table.rows) - len(records)
    if skipped:
        print(f"{path}: skipped {skipped} invalid row{'s' * (skipped > 1)} "
              f"(`cot-transplant data validate {path}` lists them)", file=sys.stderr)
    if not records:
        raise UserError(f"{path}: no valid rows left after skipping {skipped}")
    return records


def record_columns(records: list[Record]) -> list[str]:
    """File columns for `records`: the original ones (without the choice columns when no record has a
    choice, i.e. a pairs file), then every extra column in order of first appearance."""
    base = COLUMNS if any(r.has_choice for r in records) else PAIR_COLUMNS
    extra = dict.fromkeys(k for r in records for k in r.extra)
    return list(base) + [k for k in extra if k not in COLUMNS]


def _cells(record: Record, choice_columns: bool) -> dict[str, str | bool | None]:
    """Unescaped cell values; the swapped flag stays a bool (None when absent)."""
    cells: dict[str, str | bool | None] = {
        "Question": record.question,
        "Correct Answer": record.correct_answer,
        "Correct Argument": record.correct_argument,
        "Incorrect Answer": record.incorrect_answer,
        "Incorrect Argument": record.incorrect_argument,
    }
    if choice_columns:
        cells.update({"Choice Answer": record.choice_answer, "Choice Argument": record.choice_argument,
                      SWAPPED: record.swapped})
    cells.update((k, v) for k, v in record.extra.items() if k not in COLUMNS)
    return cells


def record_to_row(record: Record, *, choice_columns: bool = True) -> dict[str, str]:
    """The CSV cells of one record: the original columns in order (the choice columns empty when it
    has no choice; left out with `choice_columns=False`), then its extra columns; newlines escaped."""
    return {k: "" if v is None else str(v) if isinstance(v, bool) else escape(v)
            for k, v in _cells(record, choice_columns).items()}


def write_records(records: list[Record], path: str | os.PathLike) -> None:
    """Write records by extension: .csv in the original format, .jsonl, .parquet (both lossless).

    A file of records without choices is written as a pairs file (no choice columns).

    Raises:
        UserError: unknown extension, or the file cannot be written.
    """
    try:
        fmt = format_of(path)
    except FileProblem as exc:
        raise UserError(f"{path}: {exc}") from None
    columns = record_columns(records)
    with_choice = SWAPPED in columns
    try:
        if fmt == "csv":
            rows = [record_to_row(r, choice_columns=with_choice) for r in records]
            write_csv(path, columns, [[row.get(c, "") for c in columns] for row in rows])
        elif fmt == "jsonl":
            write_jsonl(path, [_cells(r, with_choice) for r in records])
        else:
            cells = [_cells(r, with_choice) for r in records]
            write_parquet(path, {c: [row.get(c) for row in cells] for c in columns}, bool_columns=(SWAPPED,))
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror or exc}") from None
