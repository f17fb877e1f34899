"""Fixtures for training tests; the helpers live in train_helpers.py (importable by name)."""

import pytest

from train_helpers import make_records, tiny_cfg  # noqa: F401  (tests/analysis/conftest.py loads these from here)


@pytest.fixture
def tiny_rows(monkeypatch):
    """Patch the loader so a config without data.path trains on `make_records(n)` (n=16 unless changed)."""
    import cot_transplant.runs.records as run_records

    rows = {"n": 16, "transform": None}

    def load(cfg):
        records = make_records(rows["n"])
        return rows["transform"](records) if rows["transform"] else records

    monkeypatch.setattr(run_records, "load_records", load)
    return rows
