"""The chooser's metrics against hand-computed values (see the table in `_rows`)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cot_transplant.analysis.stats import bootstrap_ci
from cot_transplant.train.metrics import CHOICE_KEYS, EVAL_KEYS, auroc, choice_metrics, eval_metrics, prefix


def _rows():
    """Five rows, worked by hand:

    row  p1   p2   label arg | Pc  Pi  chooser  argument  pick
    0    .6   .3   1     1   | .6  .3  right    right     1
    1    .2   .7   1     2   | .2  .7  wrong    wrong     2
    2    .1   .8   2     2   | .8  .1  right    right     2
    3    .4   .4   2     1   | .4  .4  wrong(tie) wrong   none
    4    .5   .1   2     2   | .1  .5  wrong    right     1
    """
    return [.6, .2, .1, .4, .5], [.3, .7, .8, .4, .1], [1, 1, 2, 2, 2], [1, 2, 2, 1, 2]


def test_choice_metrics_hand_computed():
    m = choice_metrics(*_rows())
    assert set(m) == set(CHOICE_KEYS)
    assert m["n"] == 5
    assert m["f_c"] == pytest.approx(2 / 5)  # rows 0, 2; the tie (row 3) counts as wrong
    assert m["f_c_oc"] == pytest.approx(2 / 3)  # argument right on 0, 2, 4; chooser right on 0, 2
    assert m["f_c_oi"] == 0.0  # argument wrong on 1, 3; chooser wrong on both
    assert m["o_c"] == pytest.approx((0.3 + 0.7) / 2)
    assert m["o_i"] == pytest.approx((0.5 + 0.0 + 0.4) / 3)


def test_eval_metrics_hand_computed():
    m = eval_metrics(*_rows())
    assert set(m) == set(EVAL_KEYS)
    assert m["base_rate"] == pytest.approx(3 / 5)
    assert m["agree"] == pytest.approx(3 / 5)  # rows 0, 1, 2; the tie picks nothing
    # scores .667 .222 .111 .5 .833; positives rows 0, 1: (2 + 1) of 6 pairs ordered right
    assert m["auroc"] == pytest.approx(3 / 6)
    assert m["f_c_ci_low"] <= m["f_c"] <= m["f_c_ci_high"]
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


def test_f_c_ci_is_seeded_and_matches_a_plain_bootstrap():
    rng = np.random.default_rng(0)
    n = 275
    label = rng.integers(1, 3, n)
    p_correct = np.where(rng.random(n) < 0.7, 0.8, 0.2)
    p1 = np.where(label == 1, p_correct, 1 - p_correct)
    args = (p1, 1 - p1, label, label)
    a, b = eval_metrics(*args, seed=5), eval_metrics(*args, seed=5)
    assert (a["f_c_ci_low"], a["f_c_ci_high"]) == (b["f_c_ci_low"], b["f_c_ci_high"])
    low, high = bootstrap_ci(p_correct > 0.5, n_boot=4000, seed=1)
    assert a["f_c_ci_low"] == pytest.approx(low, abs=0.015)
    assert a["f_c_ci_high"] == pytest.approx(high, abs=0.015)


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
