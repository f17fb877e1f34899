"""Intervals across seeds (t, range), the paired permutation test, Holm and CI bands."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from cot_transplant.analysis.stats import (
    FRACTION,
    ci_band,
    holm,
    mean_ci,
    paired_permutation_test,
    seed_interval,
)

T_2 = 4.302652729911275  # Student t, 2 degrees of freedom, 0.975 quantile


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


def test_min_detectable_effect_by_hand():
    from cot_transplant.analysis.stats import min_detectable_effect
    # (1.959964 + 0.841621) * sqrt(0.3 / 275) = 2.801585 * 0.0330289 = 0.092533
    assert min_detectable_effect(275, 0.3) == pytest.approx(0.092533, abs=1e-5)
    # Holm over 4: z_{1 - 0.00625} = 2.497705; (2.497705 + 0.841621) * sqrt(0.3 / 275) = 0.110296
    assert min_detectable_effect(275, 0.3, comparisons=4) == pytest.approx(0.110296, abs=1e-5)
    with pytest.raises(ValueError):
        min_detectable_effect(275, 0.0)


def test_seeds_rows_bootstrap_covers_rows_and_seeds():
    from cot_transplant.analysis.stats import seeds_rows_bootstrap
    rng = np.random.default_rng(0)
    one = rng.integers(0, 2, size=(1, 400)).astype(float)
    single = seeds_rows_bootstrap(one, n_boot=4000)
    # one seed: the bootstrap over rows, about the binomial standard error
    half = (single["ci_high"] - single["ci_low"]) / 2
    se = np.sqrt(one.mean() * (1 - one.mean()) / 400)
    assert half == pytest.approx(1.96 * se, rel=0.1)
    # three identical seeds: no seed variance, the same width as one run's rows (never narrower)
    same = seeds_rows_bootstrap(np.repeat(one, 3, axis=0), n_boot=4000)
    assert (same["ci_high"] - same["ci_low"]) == pytest.approx(single["ci_high"] - single["ci_low"], rel=0.1)
    # seeds that disagree in level widen the interval beyond the rows' alone
    shifted = np.concatenate([one, np.clip(one + 0.3, 0, 1), np.clip(one - 0.3, 0, 1)])
    wide = seeds_rows_bootstrap(shifted, n_boot=4000)
    assert wide["ci_high"] - wide["ci_low"] > 1.5 * (single["ci_high"] - single["ci_low"])


def test_seeds_rows_bootstrap_of_a_difference_is_paired():
    from cot_transplant.analysis.stats import seeds_rows_bootstrap
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, size=(3, 300)).astype(float)
    b = a.copy()
    b[:, :30] = 1 - b[:, :30]  # b differs from a on 30 rows only
    out = seeds_rows_bootstrap(a, b, n_boot=4000)
    assert out["mean"] == pytest.approx((a - b).mean())
    # paired: the interval reflects the 30 differing rows, far narrower than unpaired rows would give
    assert out["ci_high"] - out["ci_low"] < 0.1
    with pytest.raises(ValueError):
        seeds_rows_bootstrap(a, b[:, :10])
