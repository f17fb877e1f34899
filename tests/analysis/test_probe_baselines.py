"""The probes' baselines: length alone and words alone, scored on the probes' own pairs and folds.

Hand-checkable cases: length that separates perfectly gives AUROC 1.0 and pairwise accuracy 1.0 in every
fold; a word that marks correctness gives TF-IDF ~1.0 while length stays at chance; texts unrelated to
the label give ~0.5."""

from __future__ import annotations

import numpy as np
import pytest

from cot_transplant.analysis.probe_baselines import (BASELINES, cv_scores, length_features, linear_probe,
                                                     probe_baselines, surface_baselines)
from cot_transplant.analysis.probe_cv import pair_folds, summarize

WORDS = ["apples", "pears", "sum", "twice", "half", "left", "each", "total", "then", "is", "7", "12", "x", "+", "="]


def _texts(n_questions: int, seed: int, words=(8, 12), marker=None, long_correct: bool = False):
    """Two arguments per question (correct first, label 1; incorrect, label 0) of random words.

    `marker`: a (correct word, incorrect word) pair put at a random place in each; `long_correct`: the
    correct argument has 14-18 words, the incorrect 3-7 (length then separates perfectly).
    """
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n_questions):
        for label in (1, 0):
            lo, hi = ((14, 18) if label else (3, 7)) if long_correct else words
            tokens = list(rng.choice(WORDS, size=rng.integers(lo, hi + 1)))
            if marker:
                tokens.insert(int(rng.integers(0, len(tokens) + 1)), marker[0] if label else marker[1])
            texts.append(" ".join(tokens))
            labels.append(label)
    return texts, np.array(labels), np.repeat(np.arange(n_questions), 2)


def _n_tokens(texts):
    return [len(t.split()) for t in texts]


def test_length_that_separates_gives_auroc_one_in_every_fold():
    texts, labels, groups = _texts(40, 0, long_correct=True)
    result = probe_baselines(texts, _n_tokens(texts), labels, groups, folds=4)
    assert set(result) == set(BASELINES)
    length = result["length_only"]
    assert length["fold_aurocs"] == [1.0] * 4 and length["auroc"] == 1.0 and length["auroc_pooled"] == 1.0
    assert length["auroc_sd"] == 0.0 and length["pairwise"] == 1.0 and length["pairwise_folds"] == [1.0] * 4


def test_a_word_that_marks_correctness_is_found_by_tfidf_and_not_by_length():
    # "checked" and "guessed" have one length, so the marker leaves the length baseline nothing to read.
    texts, labels, groups = _texts(80, 1, marker=("checked", "guessed"))
    result = probe_baselines(texts, _n_tokens(texts), labels, groups, folds=5)
    assert result["tfidf"]["auroc"] > 0.97 and min(result["tfidf"]["fold_aurocs"]) > 0.9
    assert result["tfidf"]["pairwise"] > 0.97
    assert abs(result["length_only"]["auroc"] - 0.5) < 0.15 and abs(result["length_only"]["pairwise"] - 0.5) < 0.2


def test_texts_unrelated_to_the_label_are_at_chance():
    texts, labels, groups = _texts(100, 2)
    result = probe_baselines(texts, _n_tokens(texts), labels, groups, folds=5)
    for name in BASELINES:
        assert abs(result[name]["auroc"] - 0.5) < 0.15 and abs(result[name]["pairwise"] - 0.5) < 0.15, name


def test_one_character_words_count():
    # A question's two arguments share their words but end "= 7" (correct) and "= 8": one digit differs.
    # (scikit-learn's default token pattern drops one-character words and would see no difference.)
    rng = np.random.default_rng(3)
    stems = [" ".join(rng.choice(WORDS[:9], size=6)) for _ in range(30)]
    texts = [f"{stem} = {d}" for stem in stems for d in (7, 8)]
    labels, groups = np.tile([1, 0], 30), np.repeat(np.arange(30), 2)
    assert probe_baselines(texts, _n_tokens(texts), labels, groups, folds=3)["tfidf"]["auroc"] == 1.0


def test_the_folds_are_the_probes_folds():
    texts, labels, groups = _texts(30, 4, long_correct=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))  # items in any order: the pairs and folds follow them
    texts, labels, groups = [texts[i] for i in order], labels[order], groups[order]
    by_count = probe_baselines(texts, _n_tokens(texts), labels, groups, folds=3)
    pairs = np.array([[np.flatnonzero((groups == g) & (labels == y))[0] for y in (1, 0)] for g in range(30)])
    fold = pair_folds(np.arange(30), 3)
    by_folds = surface_baselines(texts, _n_tokens(texts), pairs, fold)
    assert by_count["length_only"]["fold_aurocs"] == by_folds["length_only"]["fold_aurocs"] == [1.0] * 3
    # each figure is the probes' `summarize` of out-of-fold scores, with [n_chars, n_tokens] as features
    features = length_features(texts, _n_tokens(texts))
    assert features[0].tolist() == [len(texts[0]), len(texts[0].split())]
    scores = cv_scores(features, pairs, fold, linear_probe)
    assert {k: v for k, v in by_folds["length_only"].items() if k != "features"} == summarize(scores, pairs, fold)


@pytest.mark.parametrize("folds", [2, 5])
def test_fold_counts_follow_the_folds(folds):
    texts, labels, groups = _texts(10, 5)
    result = probe_baselines(texts, _n_tokens(texts), labels, groups, folds=folds)
    assert all(len(result[name]["fold_aurocs"]) == folds for name in BASELINES)
    assert all(set(result[name]) >= {"pairwise", "pairwise_ci", "auroc", "auroc_sd", "fold_aurocs", "auroc_pooled",
                                     "features"} for name in BASELINES)


def test_figure_and_report_section_show_the_baselines(tmp_path):
    import io
    import json

    from cot_transplant.analysis.probes import best_layers, plot_probes, probe_layers
    from cot_transplant.analysis.report_render import Para, Table
    from cot_transplant.analysis.report_sections import probes_section

    texts, labels, groups = _texts(10, 6, long_correct=True)
    probes = probe_layers({"hidden_mean": np.random.default_rng(0).normal(size=(2, 20, 3))}, labels, groups, folds=2)
    result = {"config": {"data": "rows.jsonl", "model": "tiny-llama", "folds": 2, "template": "chat"},
              "n_questions": 10, "probes": probes, "best": best_layers(probes),
              "baselines": probe_baselines(texts, _n_tokens(texts), labels, groups, folds=2)}
    assert plot_probes(result, io.BytesIO()).getvalue().startswith(b"\x89PNG")
    path = tmp_path / "probe.json"
    path.write_text(json.dumps(result))
    tables = [b for b in probes_section([path]).blocks if isinstance(b, Table)]
    baseline_rows = {row[0]: row for row in tables[-1].rows}
    assert baseline_rows["length only (characters, tokens)"][2] == "1.000 +- 0.000"
    assert baseline_rows["length only (characters, tokens)"][3] == "1.000 1.000"
    assert "text only (TF-IDF word 1-2 grams)" in baseline_rows
    # a probe.json written before the baselines existed: a plain note, and the figure without them
    del result["baselines"]
    result["config"]["folds"] = 3  # as if from before nested CV existed
    path.write_text(json.dumps(result))
    notes = [b.text for b in probes_section([path]).blocks if isinstance(b, Para) and b.missing]
    assert len(notes) == 2 and "predates nested" in notes[0] and "no baselines" in notes[1]
    assert plot_probes(result, io.BytesIO()).getvalue().startswith(b"\x89PNG")
