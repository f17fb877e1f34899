"""The `data` command group: registration, light imports, convert, errors as one line."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import cot_transplant.commands.data as data_command
from cot_transplant.data.io import read_records


def test_command_module_imports_only_the_standard_library():
    tree = ast.parse(Path(data_command.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in top if isinstance(n, ast.ImportFrom)]
    allowed = sys.stdlib_module_names | {"__future__", "cot_transplant.commands"}  # the latter is stdlib-only
    assert names and all(name in allowed or name.split(".")[0] in allowed for name in names), names


def test_data_help_lists_the_subcommands(cli):
    code, out, _ = cli("data", "--help")
    assert code == 0
    for name in ("validate", "stats", "mask", "synth", "from-solutions", "convert"):
        assert name in out


def test_convert_between_formats(seed_csv, tmp_path, cli):
    code, out, _ = cli("data", "convert", seed_csv, tmp_path / "seed.parquet")
    assert code == 0 and out.strip() == f"{tmp_path / 'seed.parquet'}: 2748 rows"
    code, _, _ = cli("data", "convert", tmp_path / "seed.parquet", tmp_path / "back.csv")
    assert code == 0 and (tmp_path / "back.csv").read_bytes() == seed_csv.read_bytes()


def test_user_errors_are_one_line_with_exit_2(tmp_path, cli):
    path = tmp_path / "pairs.csv"
    path.write_text("Question,Correct Answer,Correct Argument,Incorrect Answer,Incorrect Argument\nq,1,a,2,b\n")
    code, out, err = cli("data", "mask", path, "--out", tmp_path / "m.csv")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "is a pairs file (no choice columns)" in err
    code, _, err = cli("data", "synth", "--n", "0", "--out", tmp_path / "s.csv")
    assert code == 2 and "expected a whole number >= 1, got 0" in err
    code, _, err = cli("data", "stats", tmp_path / "missing.csv", "--no-tokens")
    assert code == 2 and err.strip() == f"cot-transplant: error: {tmp_path / 'missing.csv'}: no such file"
    assert not (tmp_path / "m.csv").exists() and read_records(path, require_choice=False)


def test_an_unknown_output_format_is_refused_before_any_work(tmp_path, cli):
    code, _, err = cli("data", "synth", "--n", "100000", "--out", tmp_path / "rows.txt")
    assert code == 2 and "unknown format '.txt'" in err
    code, _, err = cli("data", "synth", "--n", "5", "--out", tmp_path / "r.csv", "--number-range", "2-60", "--steps", "2")
    assert code == 0
