"""The chooser's metrics against hand-computed values (see the table in `_rows`), and the Wilson interval."""

from __future__ import annotations


import numpy as np
import pytest
from scipy.stats import binom
from sklearn.metrics import roc_auc_score

from cot_transplant.runs.metrics import (CHOICE_KEYS, EVAL_KEYS, auroc, choice_metrics, eval_metrics, prefix,
                                         row_scores, wilson)


def _rows():
    """Five rows, worked by hand:

    row  p1   p2   label arg | Pc  Pi  chooser    argument  pick  agree
    0    .6   .3   1     1   | .6  .3  right 1    right     1     1
    1    .2   .7   1     2   | .2  .7  wrong 0    wrong     2     1
    2    .1   .8   2     2   | .8  .1  right 1    right     2     1
    3    .4   .4   2     1   | .4  .4  tie 1/2    wrong     none  1/2
    4    .5   .1   2     2   | .1  .5  wrong 0    right     1     0
    """
    return [.6, .2, .1, .4, .5], [.3, .7, .8, .4, .1], [1, 1, 2, 2, 2], [1, 2, 2, 1, 2]


def test_choice_metrics_hand_computed():
    m = choice_metrics(*_rows())
    assert set(m) == set(CHOICE_KEYS)
    assert m["n"] == 5
    assert m["f_c"] == pytest.approx(2.5 / 5)  # rows 0, 2, and the tie (row 3) counts 1/2
    assert m["f_c_oc"] == pytest.approx(2 / 3)  # argument right on 0, 2, 4; chooser right on 0, 2
    assert m["f_c_oi"] == pytest.approx(0.25)  # argument wrong on 1, 3: scores 0 and 1/2
    assert m["o_c"] == pytest.approx((0.3 + 0.7) / 2)
    assert m["o_i"] == pytest.approx((0.5 + 0.4) / 2)  # rows 1, 4; the tie is in neither group


def test_row_scores_ties_count_half():
    assert row_scores([0.6, 0.2, 0.4, 0.4], [0.3, 0.7, 0.4, 0.1], [1, 1, 2, 2]).tolist() == [1.0, 0.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="length"):
        row_scores([0.1, 0.2], [0.3], [1, 2])


def test_eval_metrics_hand_computed():
    m = eval_metrics(*_rows())
    assert set(m) == set(EVAL_KEYS)
    assert m["base_rate"] == pytest.approx(3 / 5)
    assert m["agree"] == pytest.approx(3.5 / 5)  # rows 0, 1, 2; the tie picks neither: 1/2
    # scores .667 .222 .111 .5 .833; positives rows 0, 1: (2 + 1) of 6 pairs ordered right
    assert m["auroc"] == pytest.approx(3 / 6)
    # Wilson on k = 2.5 of 5: centre 0.5, half 1.959964 * sqrt(0.05 + 3.841459 / 100) / (1 + 3.841459 / 5)
    assert (m["f_c_ci_low"], m["f_c_ci_high"]) == pytest.approx((0.170424, 0.829576), abs=1e-5)
    assert all(isinstance(v, (float, int)) for v in m.values())  # JSON-ready, no numpy scalars


def test_empty_groups_are_none():
    # argument always right, chooser always right: f_c_oi and o_i have no rows
    m = choice_metrics([0.9, 0.2], [0.1, 0.7], [1, 2], [1, 2])
    assert m["f_c"] == 1.0 and m["f_c_oc"] == 1.0 and m["o_c"] == pytest.approx(0.65)
    assert m["f_c_oi"] is None and m["o_i"] is None
    # chooser always wrong: o_c has no rows
    m = choice_metrics([0.1], [0.9], [1], [2])
    assert m["o_c"] is None and m["f_c_oc"] is None and m["o_i"] == pytest.approx(0.8)


def test_no_rows():
    m = eval_metrics([], [], [], [])
    assert m["n"] == 0
    assert all(m[k] is None for k in EVAL_KEYS if k != "n")


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    p1 = np.round(rng.random(200), 1) * 0.5  # rounding makes many tied scores
    p2 = np.round(rng.random(200), 1) * 0.5 + 0.01
    label = rng.integers(1, 3, 200)
    expected = roc_auc_score(label == 1, p1 / (p1 + p2))
    assert auroc(p1, p2, label) == pytest.approx(expected, abs=1e-12)


def test_auroc_one_class_and_underflow():
    assert auroc([0.3, 0.4], [0.2, 0.1], [1, 1]) is None
    # row 0: both probabilities underflowed to 0 -> score 0.5. Scores .5 .9 .1 .3; the one
    # negative (.5) is beaten by .9 only: 1 of 3 pairs.
    assert auroc([0.0, 0.9, 0.1, 0.3], [0.0, 0.1, 0.9, 0.7], [2, 1, 1, 1]) == pytest.approx(1 / 3)


def test_f_c_ci_is_wilson_and_does_not_collapse_at_24_of_24():
    label = np.tile([1, 2], 12)
    p1 = np.where(label == 1, 0.9, 0.05)
    m = eval_metrics(p1, 0.95 - p1, label, label)
    assert m["f_c"] == 1.0
    assert (m["f_c_ci_low"], m["f_c_ci_high"]) == pytest.approx((0.862024, 1.0), abs=1e-5)  # a bootstrap: [1, 1]


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="length"):
        choice_metrics([0.1, 0.2], [0.3], [1, 2], [1, 2])
    with pytest.raises(ValueError, match="label"):
        choice_metrics([0.1], [0.3], [0], [1])
    with pytest.raises(ValueError, match="argument_choice"):
        choice_metrics([0.1], [0.3], [1], [3])
    with pytest.raises(ValueError, match="NaN"):
        choice_metrics([float("nan")], [0.3], [1], [1])


def test_prefix():
    assert prefix({"f_c": 0.5, "n": 3}, "val") == {"val/f_c": 0.5, "val/n": 3}


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
