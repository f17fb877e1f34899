"""Fixtures for the sweep, control and truncation tests: tiny rows and configs from tests/train/conftest.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _train_conftest():
    """tests/train/train_helpers.py, loaded by path (tests/train is not on sys.path for every selection)."""
    path = Path(__file__).resolve().parents[1] / "train" / "train_helpers.py"
    spec = importlib.util.spec_from_file_location("_train_conftest_for_analysis", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_TRAIN = _train_conftest()
make_records = _TRAIN.make_records


@pytest.fixture
def tiny_cfg():
    """tests/train's tiny config (tiny-llama, chat template) cut to 4 train samples; call with overrides."""
    return lambda *overrides: _TRAIN.tiny_cfg("train.max_samples=4", "eval.every=4", *overrides)


@pytest.fixture
def tiny_train(monkeypatch):
    """Runs train on `make_records(12)` (3 val, 3 test rows) in one torch thread (the CPU is shared),
    without the per-run curves figure (plots are tested elsewhere)."""
    import torch

    import cot_transplant.analysis.plots as plots
    import cot_transplant.runs.records as run_records

    monkeypatch.setattr(run_records, "load_records", lambda cfg: make_records(12))
    monkeypatch.setattr(plots, "plot_curves", lambda runs, out, **kw: out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
