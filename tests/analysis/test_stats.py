"""Intervals (Wilson, t, range), the paired permutation test, Holm, CI bands and validation-only checkpoint
selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from cot_transplant.analysis.stats import (
    FRACTION,
    bootstrap_ci,
    ci_band,
    holm,
    mean_ci,
    paired_permutation_test,
    seed_interval,
    select_checkpoint,
    wilson,
)

T_2 = 4.302652729911275  # Student t, 2 degrees of freedom, 0.975 quantile


def test_bootstrap_ci_seeded_and_contains_the_mean():
    values = np.arange(20.0)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_bootstrap_ci_statistic_without_axis_gives_the_same_interval():
    values = np.random.default_rng(1).normal(size=30)
    plain = lambda x: float(np.median(x))  # noqa: E731  (no axis argument: one call per resample)
    assert bootstrap_ci(values, plain, n_boot=500) == bootstrap_ci(values, np.median, n_boot=500)


def test_bootstrap_ci_empty_raises():
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_bootstrap_ci_coverage_near_95_percent():
    # a percentile bootstrap runs a little under 95% on small samples (~93.5% at n = 60)
    rng = np.random.default_rng(0)
    hits = 0
    for sim in range(300):
        low, high = bootstrap_ci(rng.normal(0.0, 1.0, 100), n_boot=1000, seed=sim)
        hits += low <= 0.0 <= high
    assert 0.90 <= hits / 300 <= 0.99


def test_wilson_hand_computed():
    # z = 1.959964, z^2 = 3.841459. 24/24: centre (1 + z^2/48) / (1 + z^2/24) = 0.931012,
    # half z * sqrt(z^2 / 2304) / 1.160061 = 0.068988
    assert wilson(24, 24) == pytest.approx((0.862024, 1.0), abs=1e-5)
    # 12/24: centre 0.5, half z * sqrt(0.25/24 + z^2/2304) / 1.160061 = 0.185726
    assert wilson(12, 24) == pytest.approx((0.314274, 0.685726), abs=1e-5)
    assert wilson(0, 24) == pytest.approx((0.0, 0.137976), abs=1e-5)
    # 90%: z = 1.644854, z^2 = 2.705543; 12/24: half z * sqrt(0.25/24 + z^2/2304) / (1 + z^2/24) = 0.159146
    assert wilson(12, 24, alpha=0.10) == pytest.approx((0.340854, 0.659146), abs=1e-5)
    # a fractional count (ties 1/2): 2.5 of 5 is p = 0.5, half z * sqrt(0.05 + z^2/100) / (1 + z^2/5) = 0.329575
    assert wilson(2.5, 5) == pytest.approx((0.170425, 0.829575), abs=1e-5)
    assert wilson(0, 0) == (None, None)
    with pytest.raises(ValueError, match="outside"):
        wilson(6, 5)


def _exact_coverage(n: int, p: float, alpha: float) -> float:
    """P(p in the Wilson interval of k) for k ~ Binomial(n, p): the sum of pmf(k) over the k whose interval holds p."""
    return sum(binom.pmf(k, n, p) for k in range(n + 1) if wilson(k, n, alpha)[0] <= p <= wilson(k, n, alpha)[1])


def test_wilson_coverage_is_near_95_percent_and_a_90_percent_interval_fails_the_test():
    settings = [(n, p) for n in (10, 24, 60, 275) for p in (0.1, 0.3, 0.5, 0.64, 0.9)]
    coverage = np.mean([_exact_coverage(n, p, 0.05) for n, p in settings])
    assert coverage >= 0.93
    assert np.mean([_exact_coverage(n, p, 0.10) for n, p in settings]) < 0.93  # the threshold can fail


def test_holm_hand_computed():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # 2 * 0.5 capped at 1, then monotone
    assert holm([0.2]) == [0.2] and holm([]) == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, float("nan")])


def test_mean_ci_hand_computed():
    mean, low, high = mean_ci([1.0, 2.0, 3.0])  # sd 1, n 3
    half = T_2 / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert mean_ci([1.0, None, float("nan"), 3.0, 2.0]) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert mean_ci([1.0, 3.0]) == (2.0, None, None)  # two values: never a t interval (t_1 = 12.7)
    assert mean_ci([0.7]) == (0.7, None, None)
    assert mean_ci([]) == (None, None, None)
    # clipped: mean 0.96667, sd 0.057735, half 4.302653 * 0.057735 / sqrt(3) = 0.143422
    assert mean_ci([0.9, 1.0, 1.0], bounds=FRACTION) == pytest.approx((0.966667, 0.823245, 1.0), abs=1e-6)


def test_seed_interval_range_below_three_seeds_t_from_three():
    assert seed_interval([0.6, None, 0.7], bounds=FRACTION) == pytest.approx(
        {"mean": 0.65, "ci_low": 0.6, "ci_high": 0.7, "interval": "range", "n": 2})
    assert seed_interval([0.7]) == {"mean": 0.7, "ci_low": 0.7, "ci_high": 0.7, "interval": "range", "n": 1}
    assert seed_interval([]) == {"mean": None, "ci_low": None, "ci_high": None, "interval": None, "n": 0}
    t = seed_interval([0.9, 1.0, 1.0], bounds=FRACTION)
    assert t["interval"] == "t" and t["n"] == 3 and t["ci_high"] == 1.0
    assert seed_interval([0.9, 1.0, 1.0])["ci_high"] == pytest.approx(1.110089, abs=1e-6)  # no bounds: a loss


def test_mean_ci_coverage_near_95_percent_with_five_runs():
    rng = np.random.default_rng(1)
    hits = sum(low <= 0.5 <= high for _, low, high in (mean_ci(rng.normal(0.5, 0.05, 5)) for _ in range(300)))
    assert 0.90 <= hits / 300 <= 0.99


def test_permutation_identical_predictions_p_is_one():
    a = np.random.default_rng(0).integers(0, 2, 275)
    assert paired_permutation_test(a, a.copy()) == 1.0
    assert paired_permutation_test([0.3, 0.9], [0.3, 0.9]) == 1.0


def test_permutation_exact_small_cases():
    # three discordant rows all favouring a: 2 of the 8 sign patterns reach |sum| = 3
    assert paired_permutation_test([1, 1, 1, 0], [0, 0, 0, 0]) == 0.25
    # one row each way: every pattern is at least as extreme as sum 0
    assert paired_permutation_test([1, 0], [0, 1]) == 1.0


def test_permutation_planted_effect_and_mcnemar_agreement():
    rng = np.random.default_rng(2)
    a = rng.random(300) < 0.9
    b = rng.random(300) < 0.5
    assert paired_permutation_test(a, b) < 0.01
    # 20 vs 10 discordant rows: the sign-flip test is McNemar's exact binomial test
    a = np.r_[np.ones(20), np.zeros(10), np.ones(50)]
    b = np.r_[np.zeros(20), np.ones(10), np.ones(50)]
    exact = binomtest(20, 30, 0.5).pvalue
    assert paired_permutation_test(a, b, n_perm=20_000) == pytest.approx(exact, abs=0.01)


def test_permutation_length_mismatch():
    with pytest.raises(ValueError, match="equal lengths"):
        paired_permutation_test([1, 0], [1])


def test_ci_band_hand_computed():
    band = ci_band([[(0, 1.0), (10, 2.0)], [(10, None), (0, 3.0)]])
    assert band.samples.tolist() == [0.0, 10.0]
    assert band.mean.tolist() == [2.0, 2.0]
    assert band.n.tolist() == [2, 1]
    assert band.interval == ("range", "range")  # fewer than three runs: min and max, never a t band
    assert (band.low.tolist(), band.high.tolist()) == ([1.0, 2.0], [3.0, 2.0])
    band = ci_band([[(0, 0.9)], [(0, 1.0)], [(0, 1.0)]], bounds=FRACTION)
    assert band.interval == ("t",) and band.low[0] == pytest.approx(0.823245, abs=1e-6) and band.high[0] == 1.0


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
