"""Shared helpers: question files scripted for the fake server, and an in-process CLI call."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_openai import FakeOpenAI  # noqa: E402

FAST = ["--backoff-base", "0.001", "--backoff-max", "0.01", "--no-progress"]


def question(i: int, gold: int, script: str = "") -> dict:
    """A question the fake server answers by its script (see fake_openai)."""
    return {"question": f"Item {i}: how many apples are left? gold {gold} {script}".strip(), "answer": str(gold)}


def write_questions(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def gen(*args: str) -> int:
    from cot_transplant.cli import main

    return main(["generate", *args])


def read_csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def summary(out: Path) -> dict:
    return json.loads(out.with_name(out.name + ".summary.json").read_text())


@pytest.fixture
def server():
    with FakeOpenAI() as srv:
        yield srv
