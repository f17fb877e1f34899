"""Questions with gold answers, the input of pair generation, from the layouts found in the wild.

Detected from the column names of a .jsonl or .csv file:
- GSM8K: `question`, `answer` ending in `#### N` (calculator annotations `<<...>>` stripped,
  gold = N without thousands commas);
- the Lila export the original generator read: `input`, `output_answer`, `dataset`;
- any file with `question` + `answer` or `Question` + `Correct Answer` (e.g. a dataset CSV).
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cot_transplant.data.formats import unescape
from cot_transplant.data.numbers import parse_number
from cot_transplant.errors import UserError, suggest

ANNOTATION = re.compile(r"<<[^<>\n]*(?:>>)?")  # a few released solutions leave one unclosed
GSM8K_FINAL = re.compile(r"(?:^|\n)####\s*(\S[^\n]*?)\s*$")
LAYOUTS = {  # layout -> (question key, answer key), tried in this order
    "lila": ("input", "output_answer"),
    "gsm8k": ("question", "answer"),
    "dataset": ("Question", "Correct Answer"),
}


@dataclass(frozen=True)
class Question:
    """A question and its gold answer (a number as text, "18"). `solution`: a worked solution when the
    source has one (GSM8K), annotations stripped."""

    id: str
    question: str
    answer: str
    source: str
    solution: str = ""


def strip_annotations(text: str) -> str:
    """Remove GSM8K calculator annotations: "16 - 3 = <<16-3=13>>13" -> "16 - 3 = 13"."""
    return ANNOTATION.sub("", text)


def split_gsm8k_answer(answer: str) -> tuple[str, str] | None:
    """(solution without annotations, gold number without commas) from a GSM8K answer, or None."""
    m = GSM8K_FINAL.search(answer)
    if not m:
        return None
    return strip_annotations(answer[: m.start()]).strip(), m.group(1).replace(",", "").strip()


def dataset_key(name: str) -> str:
    """Lila dataset names compared loosely: "GSM8k_structured.json" and "gsm8k" match."""
    key = name.strip().lower()
    key = key.removesuffix(".json")
    return key.removesuffix("_structured")


def _rows(path: Path) -> list[tuple[int, dict | None, str]]:
    """(line or record number, object or None, problem) per record of a .jsonl or .csv file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x}); save the file as UTF-8") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    out: list[tuple[int, dict | None, str]] = []
    if path.suffix.lower() == ".jsonl":
        for number, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    out.append((number, None, f"not valid JSON: {getattr(exc, 'msg', exc)}"))
                    continue
                out.append((number, obj, "") if isinstance(obj, dict) else (number, None, "expected a JSON object"))
        return out
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.DictReader(text.splitlines(keepends=True), strict=True)
    try:
        for obj in reader:
            out.append((reader.line_num, obj, ""))
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None
    return out


def _layout(path: Path, keys: Iterable[str]) -> str:
    keys = set(keys)
    for layout, (q, a) in LAYOUTS.items():
        if q in keys and a in keys:
            return layout
    raise UserError(f"{path}: no question and answer columns (found {sorted(keys)}); expected GSM8K "
                    "(question, answer ending '#### N'), Lila (input, output_answer, dataset) or "
                    "a dataset file (Question, Correct Answer)")


def _question(path: Path, i: int, obj: dict, layout: str) -> Question:
    """One Question from a row; raises ValueError with the problem."""
    q_key, a_key = LAYOUTS[layout]
    question, answer = str(obj.get(q_key) or "").strip(), str(obj.get(a_key) or "").strip()
    if not question:
        raise ValueError(f"'{q_key}' is empty")
    solution, source = "", str(obj.get("source") or path.stem)
    if layout == "lila":
        source = str(obj.get("dataset") or path.stem)
    elif layout == "gsm8k":
        parts = split_gsm8k_answer(answer)
        if parts is not None:
            (solution, answer), source = parts, "gsm8k"
    elif path.suffix.lower() == ".csv":
        question = unescape(question)  # a dataset file in the original CSV format escapes newlines
    gold = answer.replace(",", "")
    if parse_number(gold) is None:
        raise ValueError(f"'{a_key}' has no number as the gold answer: {answer[-40:]!r}")
    return Question(f"{path.stem}-{i}", question, gold, source, solution)


def read_questions(path: str | os.PathLike, datasets: Iterable[str] | None = None, *,
                   skip_invalid: bool = False) -> list[Question]:
    """Questions from a .jsonl or .csv file in any known layout, optionally only some Lila datasets.

    `datasets` keeps rows whose `dataset` matches a name ("gsm8k", "GSM8k_structured.json", "svamp").

    Raises:
        UserError: unreadable file, unknown layout, a bad row (unless `skip_invalid`), an unknown dataset.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: {'is a directory' if p.is_dir() else 'no such file'}")
    if p.suffix.lower() not in (".jsonl", ".csv"):
        raise UserError(f"{path}: unknown question file format '{p.suffix}': use .jsonl or .csv")
    rows = _rows(p)
    parsed = [obj for _, obj, _ in rows if obj is not None]
    if not parsed:
        raise UserError(f"{path}: no questions" + (f" ({rows[0][2]} at line {rows[0][0]})" if rows else ""))
    layout = _layout(p, parsed[0].keys())
    if datasets is not None:
        present = {dataset_key(str(obj.get("dataset", ""))): str(obj.get("dataset", "")) for obj in parsed}
        if not any("dataset" in obj for obj in parsed):
            raise UserError(f"{path}: has no 'dataset' column to filter by")
        wanted = {dataset_key(d) for d in datasets}
        missing = sorted(wanted - set(present))
        if missing:
            raise UserError(f"{path}: no dataset '{missing[0]}'" + suggest(missing[0], present)
                            + f"; present: {sorted(present.values())}")
    questions, problems = [], []
    for i, (number, obj, problem) in enumerate(rows):
        if obj is not None and datasets is not None and dataset_key(str(obj.get("dataset", ""))) not in wanted:
            continue
        try:
            if obj is None:
                raise ValueError(problem)
            questions.append(_question(p, i, obj, layout))
        except ValueError as exc:
            problems.append(f"{path}:{number}: {exc}")
    if problems and not skip_invalid:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{problems[0]}{more}; --skip-invalid skips such rows")
    if problems:
        print(f"{path}: skipped {len(problems)} invalid row{'s' * (len(problems) > 1)}", file=sys.stderr)
    if not questions:
        raise UserError(f"{path}: no questions left" + (" after the dataset filter" if datasets is not None else ""))
    return questions
