"""Reading and writing records: the original CSV byte for byte, lossless JSONL/Parquet, pairs files."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cot_transplant.data.io import read_records, record_to_row, write_records
from cot_transplant.data.record import COLUMNS, PAIR_COLUMNS, Record
from cot_transplant.errors import UserError


def _record(i: int = 0, **changes) -> Record:
    base = Record(f"Question {i}?", "47.0", "Line one.\nLine two, with \"quotes\".", "58.0", "Wrong, sadly.",
                  "candidate_1", "Candidate 1 is right.", False, row_id=i)
    return dataclasses.replace(base, **changes)


def test_seed_csv_round_trips_byte_for_byte(seed_csv, tmp_path):
    records = read_records(seed_csv)
    out = tmp_path / "copy.csv"
    write_records(records, out)
    assert out.read_bytes() == seed_csv.read_bytes()


def test_seed_csv_reads_as_the_original_rows(seed_csv):
    records = read_records(seed_csv)
    assert len(records) == 2748
    assert [r.row_id for r in records[:3]] == [0, 1, 2] and records[-1].row_id == 2747
    assert records[0].correct_answer == "47.0" and records[0].swapped is False
    assert records[0].choice_answer == "candidate_1" and records[0].argument_correct
    assert sum("\n" in r.correct_argument for r in records) == 7  # the escaped newlines come back as newlines


@pytest.mark.parametrize("ext", ["jsonl", "parquet"])
def test_seed_data_round_trips_through_jsonl_and_parquet(seed_csv, tmp_path, ext):
    records = read_records(seed_csv)
    write_records(records, tmp_path / f"seed.{ext}")
    assert read_records(tmp_path / f"seed.{ext}") == records


def test_record_to_row_gives_escaped_cells_in_column_order():
    row = record_to_row(_record(extra={"source": "x\ny", "error_kind": "arithmetic"}))
    assert list(row) == list(COLUMNS) + ["source", "error_kind"]
    assert row["Correct Argument"] == 'Line one.\\nLine two, with "quotes".'
    assert row["Choice Answers Swapped"] == "False" and row["source"] == "x\\ny"
    pairs = record_to_row(_record(choice_answer=None, choice_argument=None, swapped=None))
    assert pairs["Choice Answer"] == "" and pairs["Choice Answers Swapped"] == ""
    assert list(record_to_row(_record(), choice_columns=False)) == list(PAIR_COLUMNS)


def test_extra_columns_are_kept_in_file_order(tmp_path):
    records = [_record(i, extra={"z_last": str(i), "a_first": "x"}) for i in range(3)]
    write_records(records, tmp_path / "x.csv")
    header = (tmp_path / "x.csv").read_text().splitlines()[0]
    assert header.endswith("Choice Answers Swapped,z_last,a_first")
    back = read_records(tmp_path / "x.csv")
    assert [list(r.extra) for r in back] == [["z_last", "a_first"]] * 3 and back[2].extra["z_last"] == "2"


def test_pairs_file_is_written_without_choice_columns_and_refused_for_training(tmp_path):
    pairs = [_record(i, choice_answer=None, choice_argument=None, swapped=None) for i in range(2)]
    path = tmp_path / "pairs.csv"
    write_records(pairs, path)
    assert path.read_text().splitlines()[0] == ",".join(PAIR_COLUMNS)
    with pytest.raises(UserError, match=r"is a pairs file \(no choice columns\): generate choices first with "
                                        r"`cot-transplant generate --choice-only`"):
        read_records(path)
    back = read_records(path, require_choice=False)
    assert [r.has_choice for r in back] == [False, False] and back[0].question == "Question 0?"


def test_bad_rows_stop_reading_with_a_hint_or_are_skipped_with_a_count(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    write_records([_record(i) for i in range(4)], path)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace(",47.0,", ",forty-seven,", 1)  # data row index 1, file line 3
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as info:
        read_records(path)
    assert f"{path}:3: column 'Correct Answer': not a number: 'forty-seven'" in str(info.value)
    assert "--skip-invalid" in str(info.value)
    kept = read_records(path, skip_invalid=True)
    assert [r.row_id for r in kept] == [0, 2, 3]  # row ids stay the file's data row indices
    assert "skipped 1 invalid row" in capsys.readouterr().err


def test_unknown_output_extension_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown format '.txt'"):
        write_records([_record()], tmp_path / "x.txt")


# --- property: any text survives ------------------------------------------------------------------
_text = st.text(min_size=1, max_size=40).filter(lambda s: s.strip())
_no_backslash = st.text(st.characters(blacklist_characters="\\", blacklist_categories=("Cs",)),
                        min_size=1, max_size=40).filter(lambda s: s.strip())
_extra = st.text(max_size=20)


@st.composite
def _records(draw, text=_text, extra=_extra):
    n = draw(st.integers(1, 4))
    full = draw(st.booleans())
    out = []
    for i in range(n):
        right, delta = draw(st.integers(-10**6, 10**6)), draw(st.integers(1, 1000))
        record = Record(draw(text), f"{right}.0", draw(text), f"{right + delta}.0", draw(text), row_id=i,
                        extra={"source": draw(extra), "note": draw(extra)})
        if full:
            record.choice_answer = draw(st.sampled_from(["candidate_1", "candidate_2"]))
            record.choice_argument, record.swapped = draw(text), draw(st.booleans())
        out.append(record)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=_records())
def test_jsonl_and_parquet_are_lossless_for_any_text(tmp_path, records):
    for ext in ("jsonl", "parquet"):
        path = tmp_path / f"r.{ext}"
        write_records(records, path)
        assert read_records(path, require_choice=False) == records


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=_records(text=_no_backslash, extra=st.text(st.characters(blacklist_characters="\\",
                                                                       blacklist_categories=("Cs",)), max_size=20)))
def test_original_csv_round_trips_texts_without_backslashes(tmp_path, records):
    path = tmp_path / "r.csv"
    write_records(records, path)
    assert read_records(path, require_choice=False) == records
    data = path.read_bytes()
    write_records(read_records(path, require_choice=False), path)
    assert path.read_bytes() == data
