"""The validation-only checkpoint choice of a run's summary (`runs.summary.select_checkpoint`)."""

from __future__ import annotations

import pytest

from cot_transplant.runs.summary import select_checkpoint


class Poison:
    """A value that fails on any use: reading it proves a test metric leaked into the choice."""

    def __getattr__(self, name):
        raise AssertionError("select_checkpoint used a test value")

    def __lt__(self, other):
        raise AssertionError("select_checkpoint compared a test value")

    __gt__ = __le__ = __ge__ = __float__ = __neg__ = __lt__


def _evals():
    return [
        {"kind": "eval", "split": "val", "samples": 512, "val/f_c": 0.6, "val/loss": 0.60},
        {"kind": "eval", "split": "val", "samples": 384, "val/f_c": 0.7, "val/loss": 0.65},
        {"kind": "eval", "split": "val", "samples": 256, "val/f_c": 0.7, "val/loss": 0.70},
        {"kind": "eval", "split": "val", "samples": 128, "val/f_c": None, "val/loss": 0.69},
    ]


def test_select_checkpoint_best_val_earliest_on_ties():
    assert select_checkpoint(_evals()) == 256
    assert select_checkpoint(_evals(), "val/loss", maximize=False) == 512


def test_select_checkpoint_ignores_poisoned_test_metrics():
    records = _evals()
    records[0]["test/f_c"] = Poison()
    records.append({"kind": "eval", "split": "test", "samples": 640, "test/f_c": Poison(), "test/loss": Poison()})
    records.append({"kind": "eval", "split": "test", "samples": 768, "test/f_c": 1.0})
    assert select_checkpoint(records) == 256


def test_select_checkpoint_refuses_test_metric_and_empty():
    with pytest.raises(ValueError, match="validation only"):
        select_checkpoint(_evals(), "test/f_c")
    with pytest.raises(ValueError, match="no eval record"):
        select_checkpoint(_evals(), "val/auroc")
