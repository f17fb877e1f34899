"""The probes' statistics on synthetic features: groups and folds, within-pair flips, pairwise accuracy by
hand, the ridge against scikit-learn's, the nested choice blind to its outer test fold, and the
permutation null on a planted signal and on noise."""

from __future__ import annotations

import numpy as np
import pytest

from cot_transplant.analysis.probe_cv import (choose, flip_signs, flipped, item_folds, pair_folds, pairwise_correct,
                                              permutation_p, probe_kind, question_groups, ridge_counts, summarize)
from cot_transplant.errors import UserError
from cot_transplant.runs.metrics import wilson


def paired_features(n_pairs: int, dim: int, layers: int, signal: dict[int, np.ndarray] | None = None, seed: int = 0):
    """(layers, 2 n_pairs, dim) noise with a shared per-row offset (what a probe must not read); `signal`
    {layer: (n_pairs,) strength} adds that much along one direction to each row's correct item."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(layers, 2 * n_pairs, dim)) + np.repeat(rng.normal(size=(layers, n_pairs, dim)), 2, axis=1)
    for layer, strength in (signal or {}).items():
        direction = rng.normal(size=dim)
        x[layer, 0::2] += np.outer(strength, direction / np.linalg.norm(direction))
    return x, np.arange(2 * n_pairs).reshape(-1, 2)


def test_questions_are_grouped_after_normalizing():
    questions = ["What is 2+2? ", "what  is\t2+2?", "\nWHAT IS 2+2?", "What is 2+3?", "what is 2+3?"]
    assert question_groups(questions).tolist() == [0, 0, 0, 1, 1]


def test_folds_never_split_a_question():
    rng = np.random.default_rng(0)
    questions = [f"Question {q}?" for q in rng.integers(0, 23, size=60)]  # repeats across rows
    questions = [q.upper() if i % 3 == 0 else q for i, q in enumerate(questions)]  # same question, other case
    groups = question_groups(questions)
    fold = pair_folds(groups, 5)
    assert sorted(set(fold.tolist())) == [0, 1, 2, 3, 4]
    for g in np.unique(groups):
        assert len(set(fold[groups == g].tolist())) == 1  # every row of a question in one fold
    pairs = np.arange(120).reshape(-1, 2)
    of_item = item_folds(pairs, fold, 120)
    assert (of_item[0::2] == of_item[1::2]).all()  # a row's two arguments in one fold
    with pytest.raises(UserError, match="only 3 questions"):
        pair_folds(np.repeat(np.arange(3), 2), 5)


def test_flips_keep_each_rows_two_labels_opposite():
    pairs = np.arange(400).reshape(-1, 2)
    signs = flip_signs(len(pairs), 50, seed=1)
    assert signs.shape == (200, 51) and (signs[:, 0] == 1).all() and set(np.unique(signs)) == {-1.0, 1.0}
    assert 0.4 < (signs[:, 1:] < 0).mean() < 0.6  # about half the rows flip in each permutation
    for column in (1, 7):
        swapped = flipped(pairs, signs[:, column])
        assert (np.sort(swapped, axis=1) == pairs).all()  # the same two arguments, one correct and one not
        assert ((swapped[:, 0] == pairs[:, 1]) == (signs[:, column] < 0)).all()
    assert (flip_signs(200, 50, seed=1) == signs).all()  # seeded


def test_pairwise_accuracy_and_auroc_by_hand():
    # rows: correct above (1), below (0), tie (1/2)
    assert pairwise_correct([0.9, 0.2, 0.5], [0.1, 0.7, 0.5]).tolist() == [1.0, 0.0, 0.5]
    scores = np.array([0.9, 0.1, 0.2, 0.7, 0.5, 0.5])  # items: row 0 (correct, incorrect), row 1, row 2
    result = summarize(scores, np.arange(6).reshape(-1, 2), np.array([0, 0, 1]))
    assert result["pairwise"] == 0.5 and result["pairwise_folds"] == [0.5, 0.5]
    assert result["pairwise_ci"] == list(wilson(1.5, 3))
    # fold 0: correct {0.9, 0.2} vs incorrect {0.1, 0.7}: 3 of 4 orderings right; fold 1: one tie
    assert result["fold_aurocs"] == [0.75, 0.5] and result["auroc"] == 0.625
    assert result["auroc_pooled"] == pytest.approx(5.5 / 9)  # 9 orderings, 5 right and one tie


def test_permutation_p_with_the_plus_one():
    out = permutation_p([0.8, 0.5, 0.9, 0.8, 0.6])  # observed 0.8; 2 of 4 null values reach it
    assert out["p_value"] == pytest.approx(3 / 5)
    assert out["null_q95"] == pytest.approx(np.quantile([0.5, 0.9, 0.8, 0.6], 0.95))
    assert permutation_p([1.0, 0.5, 0.5])["p_value"] == pytest.approx(1 / 3)  # the smallest it can be


def test_choose_takes_the_first_best_inner_score():
    inner = np.array([[[5, 1], [7, 1], [7, 9]], [[1, 0], [0, 2], [0, 1]]])  # (folds 2, configs 3, columns 2)
    outer = np.array([[[1, 4], [2, 5], [3, 6]], [[8, 0], [9, 1], [7, 2]]])
    chosen, right = choose(inner, outer)
    assert chosen.tolist() == [[1, 2], [0, 1]]
    assert right.tolist() == [[2, 6], [8, 1]]


def test_the_ridge_is_scikit_learns_on_standardized_features():
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    x, pairs = paired_features(40, 6, 1, {0: np.full(40, 1.0)})
    x = x[0] * np.array([0.01, 1, 100, 1, 1, 1]) + 3  # features on very different scales
    x[:, 3] = 7.0  # and one that never varies
    fold, signs, alphas = np.arange(40) % 4, flip_signs(40, 3, seed=2), (1.0, 0.01)
    counts = ridge_counts(x, pairs, fold, signs, alphas)
    of_item = item_folds(pairs, fold, len(x))
    for column in (0, 2):
        target = np.zeros(len(x))
        swapped = flipped(pairs, signs[:, column])
        target[swapped[:, 0]], target[swapped[:, 1]] = 1, -1
        for a, alpha in enumerate(alphas):
            for f in range(4):
                inner = 0.0
                for test in range(4):
                    train = (of_item != f) & (of_item != test)
                    if test == f:
                        train = of_item != f
                    scaler = StandardScaler().fit(x[train])
                    ridge = Ridge(alpha=alpha * train.sum()).fit(scaler.transform(x[train]), target[train])
                    score = ridge.predict(scaler.transform(x))
                    rows = swapped[fold == test]
                    right = pairwise_correct(score[rows[:, 0]], score[rows[:, 1]]).sum()
                    if test == f:
                        assert right == counts["outer"][f, a, column]
                        if column == 0:  # item scores: scikit-learn's up to its intercept
                            np.testing.assert_allclose(counts["scores"][of_item == f, a, 0] + ridge.intercept_,
                                                       score[of_item == f], atol=1e-8)
                    else:
                        inner += right
                assert inner == counts["inner"][f, a, column]


def test_the_choice_for_a_fold_never_reads_that_fold():
    x, pairs = paired_features(100, 8, 3, seed=3)
    fold, signs = np.arange(100) % 5, flip_signs(100, 20, seed=4)
    base = ridge_counts(x[1], pairs, fold, signs)
    in_fold_0 = item_folds(pairs, fold, len(x[1])) == 0
    other = x[1].copy()
    other[in_fold_0] = np.random.default_rng(5).normal(size=(in_fold_0.sum(), 8)) * 50  # fold 0's features
    other_signs = signs.copy()
    other_signs[fold == 0] *= -1  # and its labels
    changed = ridge_counts(other, pairs, fold, other_signs)
    np.testing.assert_array_equal(changed["inner"][0], base["inner"][0])  # the choice for outer fold 0
    assert not np.array_equal(changed["outer"][0], base["outer"][0])  # its score is fold 0's own

    # A signal that fold 0 holds in layer 2 alone, and the other folds in layer 1 alone: outer fold 0's
    # inner CV sees only layer 1 and picks it, and scores at chance on fold 0, where layer 1 is noise.
    strength = np.where(fold == 0, 0.0, 6.0)
    x[1, 0::2] += np.outer(strength, np.eye(8)[0])
    x[2, 0::2] += np.outer(6.0 - strength, np.eye(8)[1])
    nested = probe_kind(x, pairs, fold, signs, alphas=(1.0,))["nested"]
    assert nested["layers_chosen"] == [1, 1, 1, 1, 1]
    assert nested["pairwise_folds"][0] < 0.75 and min(nested["pairwise_folds"][1:]) > 0.9


def test_a_planted_layer_is_found_and_beats_every_flip():
    x, pairs = paired_features(150, 12, 4, {2: np.full(150, 6.0)}, seed=6)
    result = probe_kind(x, pairs, np.arange(150) % 5, flip_signs(150, 99, seed=7))
    nested = result["nested"]
    assert nested["pairwise"] > 0.95 and nested["auroc"] > 0.9 and nested["layers_chosen"] == [2] * 5
    assert nested["p_value"] == pytest.approx(1 / 100) and nested["null_q95"] < 0.65
    assert len(nested["null"]) == 99 and abs(np.mean(nested["null"]) - 0.5) < 0.05
    assert result["best_single"]["layer"] == 2 and result["best_single"]["p_value"] == pytest.approx(1 / 100)
    layers = result["layers"]
    assert [r["layer"] for r in layers] == [0, 1, 2, 3] and layers[2]["pairwise"] > 0.95
    assert all(abs(layers[i]["pairwise"] - 0.5) < 0.15 for i in (0, 1, 3))
    assert abs(layers[2]["auroc_shuffled"] - 0.5) < 0.2  # the flipped labels: chance even where the signal is


def test_noise_gives_a_p_value_that_is_not_small():
    x, pairs = paired_features(150, 12, 4, seed=8)
    result = probe_kind(x, pairs, np.arange(150) % 5, flip_signs(150, 99, seed=9))
    nested = result["nested"]
    assert abs(nested["pairwise"] - 0.5) < 0.1 and nested["p_value"] > 0.1
    # the best of 4 layers on the same folds looks better than chance; against the max over layers of
    # each flip it does not
    assert result["best_single"]["pairwise"] >= max(r["pairwise"] for r in result["layers"]) - 1e-9
    assert result["best_single"]["p_value"] > 0.1
