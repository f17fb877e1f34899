"""Fixtures for the data tests: the shared real data beside the repository, and an in-process CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from cot_transplant.cli import main

# Tests read the real data from ../shared beside the repository (as in the development set-up).
SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def _shared_file(relative: str) -> Path:
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared data directory lives beside the repository (../shared)")
    return path


@pytest.fixture
def seed_csv() -> Path:
    """The original study's dataset, ../shared/seed-data/dataset.csv."""
    return _shared_file("seed-data/dataset.csv")


@pytest.fixture
def model_solutions() -> Path:
    return _shared_file("gsm8k/example_model_solutions.jsonl")


@pytest.fixture
def gsm8k_test() -> Path:
    return _shared_file("gsm8k/test.jsonl")


@pytest.fixture
def lila_sample() -> Path:
    return _shared_file("lila-layout/gsm8k_test_sample.jsonl")


@pytest.fixture
def cli(capsys):
    """Run `cot-transplant ARGS` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run
