"""`data validate`: one crafted bad file per rule, and the line it must print."""

from __future__ import annotations

import json

import pytest

from cot_transplant.data.record import COLUMNS, PAIR_COLUMNS

HEADER = ",".join(COLUMNS)
ROW = "What is 2+2?,4.0,2 + 2 = 4.,5.0,2 + 2 = 5.,candidate_1,Candidate 1 is right.,False"
ROW2 = "What is 3+3?,6.0,3 + 3 = 6.,7.0,3 + 3 = 7.,candidate_2,Candidate 2 is right.,True"


def _csv(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def _replace(row: str, index: int, value: str) -> str:
    cells = row.split(",")
    cells[index] = value
    return ",".join(cells)


# (id, file name, content, extra CLI args, expected line in the output with FILE for the path)
BAD = [
    ("missing-column", "x.csv", _csv(HEADER.replace(",Incorrect Argument", ""), "q,4.0,a,5.0,c,Candidate 1.,False"),
     [], "FILE:1: column 'Incorrect Argument': missing"),
    ("misspelled-column", "x.csv", _csv(HEADER.replace("Correct Answer,", "Correct Anwser,"), ROW), [],
     "FILE:1: column 'Correct Answer': missing (did you mean 'Correct Anwser'?)"),
    ("misspelled-choice-column", "x.csv", _csv(HEADER.replace("Swapped", "Swaped"), ROW), [],
     "FILE:1: column 'Choice Answers Swapped': missing (did you mean 'Choice Answers Swaped'?)"),
    ("duplicate-column", "x.csv", _csv(HEADER + ",note,note", ROW + ",a,b"), [],
     "FILE:1: column 'note': appears more than once in the header"),
    ("empty-field", "x.csv", _csv(HEADER, ROW, _replace(ROW2, 2, "")), [], "FILE:3: column 'Correct Argument': empty"),
    ("blank-field", "x.csv", _csv(HEADER, _replace(ROW, 0, "   ")), [], "FILE:2: column 'Question': empty"),
    ("non-numeric-answer", "x.csv", _csv(HEADER, _replace(ROW, 1, "four")), [],
     "FILE:2: column 'Correct Answer': not a number: 'four'"),
    ("equal-answers", "x.csv", _csv(HEADER, _replace(ROW, 3, "4")), [],
     "FILE:2: column 'Incorrect Answer': equals the correct answer (4.0)"),
    ("invalid-choice", "x.csv", _csv(HEADER, _replace(ROW, 5, "candidate_3")), [],
     "FILE:2: column 'Choice Answer': 'candidate_3' is not candidate_1 or candidate_2"),
    ("invalid-swapped", "x.csv", _csv(HEADER, _replace(ROW, 7, "yes")), [],
     "FILE:2: column 'Choice Answers Swapped': 'yes' is not True or False"),
    ("repeated-header", "x.csv", _csv(HEADER, ROW, HEADER, ROW2), [],
     "FILE:3: repeated header line (the original generator wrote one at every restart); delete the line"),
    ("unterminated-quote", "x.csv", _csv(HEADER, ROW, 'What "is" this?,"4.0,a,5.0,b,candidate_1,c,False', ROW2), [],
     "FILE:3: unterminated quote: a quoted field opened in this row never closes"),
    ("malformed-quoting", "x.csv", _csv(HEADER, '"What"s 2+2?,4.0,a,5.0,b,candidate_1,c,False'), [],
     "FILE:2: malformed quoting: a closing quote must be followed by a comma or the end of the line"),
    ("too-many-fields", "x.csv", _csv(HEADER, ROW, ROW2 + ",surplus"), [], "FILE:3: 9 fields, expected 8 (too many)"),
    ("too-few-fields", "x.csv", _csv(HEADER, "What is 2+2?,4.0,2 + 2 = 4.,5.0,2 + 2 = 5.,candidate_1,False"), [],
     "FILE:2: 7 fields, expected 8 (too few)"),
    ("quoted-newline-run", "x.csv", _csv(HEADER, 'q,4.0,"a\nb,5.0,c,candidate_1,d,False', 'x",1,2'), [],
     "FILE:2: 5 fields, expected 8 (too few); the row spans lines 2-4: an unbalanced quote?"),
    ("non-utf8", "x.csv", (_csv(HEADER, ROW) + "Caf\xe9 costs?,4.0,a,5.0,b,candidate_1,c,False\n").encode("latin-1"), [],
     "FILE:3: column 'Question': not valid UTF-8 (byte 0xe9); save the file as UTF-8"),
    ("empty-file", "x.csv", "", [], "FILE: empty file (expected a header line)"),
    ("header-only", "x.csv", _csv(HEADER), [], "FILE: no data rows (only a header line)"),
    ("field-too-long", "x.csv", _csv(HEADER, _replace(ROW, 2, "x" * 60)), ["--max-field-chars", "50"],
     "FILE:2: column 'Correct Argument': 60 characters, over the limit of 50 (see --max-field-chars)"),
    ("field-over-default-limit", "x.csv", _csv(HEADER, _replace(ROW, 4, "y" * 200_000)), [],
     "FILE:2: column 'Incorrect Argument': 200,000 characters, over the limit of 100,000 (see --max-field-chars)"),
    ("pairs-file", "x.csv", _csv(",".join(PAIR_COLUMNS), "q,4.0,a,5.0,b"), [],
     "FILE: is a pairs file (no choice columns): generate choices first with `cot-transplant generate --choice-only`; "
     "or check it as a pairs file with --pairs"),
    ("pairs-file-empty-choices", "x.csv", _csv(HEADER, "q,4.0,a,5.0,b,,,"), [],
     "FILE: is a pairs file (choice columns empty throughout)"),
    ("partial-choice-in-pairs-mode", "x.csv", _csv(HEADER, "q,4.0,a,5.0,b,,,", "r,4.0,a,5.0,b,candidate_1,,True"),
     ["--pairs"], "FILE:3: column 'Choice Argument': empty"),
    ("unknown-extension", "x.txt", _csv(HEADER, ROW), [],
     "FILE: unknown format '.txt': use a .csv, .jsonl or .parquet file"),
    ("jsonl-bad-json", "x.jsonl", json.dumps(dict(zip(COLUMNS, ROW.split(",")))) + "\n{not json\n", [],
     "FILE:2: not valid JSON: Expecting property name enclosed in double quotes"),
    ("jsonl-not-object", "x.jsonl", json.dumps(dict(zip(COLUMNS, ROW.split(",")))) + "\n[1, 2]\n", [],
     "FILE:2: expected a JSON object, got list"),
    ("jsonl-missing-key", "x.jsonl", json.dumps(dict(zip(COLUMNS, ROW.split(",")))) + "\n"
     + json.dumps({k: v for k, v in zip(COLUMNS, ROW2.split(",")) if k != "Correct Argument"}) + "\n", [],
     "FILE:2: column 'Correct Argument': empty"),
    ("not-parquet", "x.parquet", "this is not parquet", [], "FILE: not a readable Parquet file"),
]


@pytest.mark.parametrize("name,content,args,expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_each_rule_reports_its_problem(tmp_path, cli, name, content, args, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    code, out, err = cli("data", "validate", path, *args)
    assert code == 1, out
    assert expected.replace("FILE", str(path)) in out.splitlines() or any(
        line.startswith(expected.replace("FILE", str(path))) for line in out.splitlines()), out
    assert "Traceback" not in out + err


def test_a_directory_and_a_missing_path_are_one_line_errors_not_tracebacks(tmp_path, cli):
    code, out, err = cli("data", "validate", tmp_path)
    assert code == 2 and err.strip().endswith(f"{tmp_path}: is a directory; give a .csv, .jsonl or .parquet file")
    code, out, err = cli("data", "validate", tmp_path / "nope.csv")
    assert code == 2 and f"{tmp_path / 'nope.csv'}: no such file" in err and len(err.strip().splitlines()) == 1


def test_every_problem_of_a_file_is_listed_with_a_summary(tmp_path, cli):
    path = tmp_path / "x.csv"
    path.write_text(_csv(HEADER, _replace(ROW, 1, "four"), ROW2, _replace(_replace(ROW, 7, "no"), 0, "")))
    code, out, _ = cli("data", "validate", path)
    lines = out.splitlines()
    assert code == 1 and lines == [
        f"{path}:2: column 'Correct Answer': not a number: 'four'",
        f"{path}:4: column 'Question': empty",
        f"{path}:4: column 'Choice Answers Swapped': 'no' is not True or False",
        f"{path}: invalid: 3 problems in 2 rows of 3",
    ]


@pytest.mark.parametrize("content", [
    pytest.param(_csv(HEADER, ROW, ROW2).replace("\n", "\r\n").encode(), id="crlf"),
    pytest.param(b"\xef\xbb\xbf" + _csv(HEADER, ROW, ROW2).encode(), id="bom"),
    pytest.param(_csv(HEADER + ",error_kind,notes", ROW + ",arithmetic,", ROW2 + ",unit-rate,x").encode(), id="extra-columns"),
])
def test_crlf_bom_and_extra_columns_are_valid(tmp_path, cli, content):
    path = tmp_path / "ok.csv"
    path.write_bytes(content)
    code, out, _ = cli("data", "validate", path)
    assert code == 0, out
    assert out.splitlines()[-1].startswith(f"{path}: valid: 2 rows, kind: full")


def test_a_long_field_passes_under_a_raised_limit(tmp_path, cli):
    path = tmp_path / "long.csv"
    path.write_text(_csv(HEADER, _replace(ROW, 4, "y" * 200_000)))
    code, out, _ = cli("data", "validate", path, "--max-field-chars", "300000")
    assert code == 0 and "valid: 1 rows" in out


def test_duplicate_questions_are_warnings(tmp_path, cli):
    path = tmp_path / "dup.csv"
    path.write_text(_csv(HEADER, ROW, ROW2, ROW.replace("What is 2+2?", " What is 2+2? ")))
    code, out, _ = cli("data", "validate", path)
    assert code == 0
    assert out.splitlines() == [f"{path}:4: column 'Question': warning: same question as row 2",
                                f"{path}: valid: 3 rows, kind: full, 1 warning"]


def test_a_pairs_file_is_valid_with_pairs(tmp_path, cli):
    path = tmp_path / "pairs.csv"
    path.write_text(_csv(",".join(PAIR_COLUMNS) + ",id", "q,4.0,a,5.0,b,7"))
    code, out, _ = cli("data", "validate", path, "--pairs")
    assert code == 0 and out.strip() == f"{path}: valid: 1 rows, kind: pairs, extra columns: id"


def test_the_seed_data_is_valid(seed_csv, cli):
    code, out, _ = cli("data", "validate", seed_csv)
    assert code == 0 and out.splitlines()[-1] == f"{seed_csv}: valid: 2748 rows, kind: full, 7 warnings"
