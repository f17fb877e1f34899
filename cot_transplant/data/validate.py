"""The rules a dataset file must follow; `data validate` and `read_records` both apply them.

A *full* file has the eight original columns; a *pairs* file lacks the three choice
columns or leaves them empty throughout (fit for choice generation, refused by
training). Problems are reported one per line as `FILE:ROW: column 'X': what is wrong`
(ROW as defined in `formats`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from cot_transplant.data.formats import FileProblem, Problem, Table, read_table
from cot_transplant.data.numbers import parse_number
from cot_transplant.data.record import CANDIDATES, CHOICE_COLUMNS, COLUMNS, PAIR_COLUMNS
from cot_transplant.errors import suggest

DEFAULT_MAX_FIELD_CHARS = 100_000
ANSWER_COLUMNS = ("Correct Answer", "Incorrect Answer")
SWAPPED_VALUES = ("True", "False")
PAIRS_HINT = "generate choices first with `cot-transplant generate --choice-only`"
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape


@dataclass
class Report:
    """What checking one file found. `fatal`: no row can be used (file or header problem)."""

    path: str
    kind: str = "pairs"
    table: Table | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    fatal: bool = False

    @property
    def rows(self) -> int:
        """Data rows in the file (repeated header lines are not data)."""
        return 0 if self.table is None else sum(r.index is not None for r in self.table.rows)

    @property
    def bad_rows(self) -> set[int]:
        return {p.row for p in self.problems if p.row is not None}

    @property
    def extra_columns(self) -> list[str]:
        return [] if self.table is None else [c for c in self.table.columns if c not in COLUMNS]


def _show(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def check_columns(table: Table) -> list[Problem]:
    """Header problems: duplicates and missing columns, each with the near name when one is present."""
    where = (table.path, table.header_row)
    problems = [Problem(*where, name, "appears more than once in the header")
                for name in dict.fromkeys(c for c in table.columns if table.columns.count(c) > 1)]
    unknown = [c for c in table.columns if c not in COLUMNS]
    present_choice = [c for c in CHOICE_COLUMNS if c in table.columns]
    for name in COLUMNS:
        if name in table.columns:
            continue
        near = suggest(name, unknown)
        # A choice column may be absent (a pairs file) unless its siblings or a misspelling say otherwise.
        if name in PAIR_COLUMNS or present_choice or near:
            problems.append(Problem(*where, name, "missing" + near))
    return problems


def file_kind(table: Table) -> str:
    """'full' when the three choice columns exist and hold anything, else 'pairs'."""
    if not all(c in table.columns for c in CHOICE_COLUMNS):
        return "pairs"
    if any(r.cells is None and r.index is not None for r in table.rows):
        return "full"  # a row that does not parse may hold choices: "empty throughout" cannot be shown
    filled = any(r.cells and any(r.cells.get(c, "").strip() for c in CHOICE_COLUMNS) for r in table.rows)
    return "full" if filled else "pairs"


def check_row(path: str, row: int, cells: dict[str, str], *, kind: str, require_choice: bool,
              max_field_chars: int) -> list[Problem]:
    """Every problem of one data row, in column order."""
    out: list[Problem] = []

    def bad(column: str, message: str) -> None:
        out.append(Problem(path, row, column, message))

    for column, value in cells.items():
        if len(value) > max_field_chars:
            bad(column, f"{len(value):,} characters, over the limit of {max_field_chars:,} (see --max-field-chars)")
        if m := _UNDECODABLE.search(value):
            bad(column, f"not valid UTF-8 (byte 0x{ord(m.group()) - 0xDC00:02x}); save the file as UTF-8")
    for column in PAIR_COLUMNS:
        if not cells.get(column, "").strip():
            bad(column, "empty")
    numbers = {}
    for column in ANSWER_COLUMNS:
        value = cells.get(column, "")
        if value.strip():
            numbers[column] = parse_number(value)
            if numbers[column] is None:
                bad(column, f"not a number: {_show(value)}")
    if None not in numbers.values() and len(numbers) == 2 and numbers["Correct Answer"] == numbers["Incorrect Answer"]:
        bad("Incorrect Answer", f"equals the correct answer ({cells['Correct Answer'].strip()})")
    if kind == "full":
        values = {c: cells.get(c, "") for c in CHOICE_COLUMNS}
        if require_choice or any(v.strip() for v in values.values()):
            for column, value in values.items():
                if not value.strip():
                    bad(column, "empty")
            answer, swapped = values["Choice Answer"], values["Choice Answers Swapped"]
            if answer.strip() and answer not in CANDIDATES:
                bad("Choice Answer", f"{_show(answer)} is not candidate_1 or candidate_2" + suggest(answer, CANDIDATES))
            if swapped.strip() and swapped not in SWAPPED_VALUES:
                bad("Choice Answers Swapped", f"{_show(swapped)} is not True or False" + suggest(swapped, SWAPPED_VALUES))
    return sorted(out, key=lambda p: list(cells).index(p.column) if p.column in cells else len(cells))


def duplicate_warnings(table: Table) -> list[Problem]:
    """A warning for each row whose question already appeared (same text, outer spaces ignored)."""
    first: dict[str, int] = {}
    out = []
    for r in table.rows:
        if not r.cells or not r.cells.get("Question", "").strip():
            continue
        key = r.cells["Question"].strip()
        if key in first:
            out.append(Problem(table.path, r.row, "Question", f"same question as row {first[key]}", warning=True))
        else:
            first[key] = r.row
    return out


def check_file(path: str | os.PathLike, *, require_choice: bool = True,
               max_field_chars: int = DEFAULT_MAX_FIELD_CHARS) -> Report:
    """Check a dataset file against every rule; never raises on bad content.

    `require_choice=False` accepts a pairs file (and checks choice cells only where a row has any).
    """
    report = Report(str(path))
    try:
        table = read_table(path)
    except FileProblem as exc:
        report.problems.append(Problem(str(path), None, None, str(exc)))
        report.fatal = True
        return report
    report.table = table
    if not table.columns and table.problems:  # no record parsed, so no column names to check
        report.problems, report.fatal = list(table.problems), True
        return report
    header = check_columns(table)
    if header:
        report.problems.extend(header)
        report.fatal = True
        return report
    if report.rows == 0:
        report.problems.append(Problem(str(path), None, None, "no data rows" + (" (only a header line)" if table.fmt == "csv" else "")))
        report.fatal = True
        return report
    report.kind = file_kind(table)
    if report.kind == "pairs" and require_choice:
        absent = not any(c in table.columns for c in CHOICE_COLUMNS)
        why = "no choice columns" if absent else "choice columns empty throughout"
        report.problems.append(Problem(str(path), None, None, f"is a pairs file ({why}): {PAIRS_HINT}"))
        report.fatal = True
        return report
    problems = list(table.problems)
    for r in table.rows:
        if r.cells is not None:
            problems += check_row(str(path), r.row, r.cells, kind=report.kind, require_choice=require_choice,
                                  max_field_chars=max_field_chars)
    report.problems = sorted(problems, key=lambda p: p.row or 0)
    report.warnings = duplicate_warnings(table)
    return report
