"""What a probe of the arguer's states must beat: the same question answered from the argument's surface.

Scored on the probes' own pairs and outer folds, with the probes' pairwise accuracy and AUROC
(`probe_cv.summarize`), so a layer's figures and a baseline's differ only in the features:
  length_only  the argument's length, [characters, tokens] (the tokens of its exact span), through a
               standardized L2 logistic regression
  tfidf        the argument's text: TF-IDF of word 1- and 2-grams, then an L2 logistic regression, the
               vocabulary and weights fit inside each training fold (a scikit-learn Pipeline)
(The third baseline, the layer-0 probe on the embedding output, is the probes' own ridge at layer 0:
`probes.run_probes` takes it from `probe_cv.probe_kind`.) Both keep a fixed C = 1: length has two
features, and TF-IDF is a reference, not a contender whose penalty is worth a search.
A layer that does no better than these reads no more than the text's length or its words.
"""

from __future__ import annotations

import numpy as np

from cot_transplant.analysis.probe_cv import item_folds, pair_folds, pairs_from_items, summarize

BASELINES = ("length_only", "tfidf")
BASELINE_LABELS = {"layer0": "layer 0 (embedding output, mean over the argument)",
                   "length_only": "length only (characters, tokens)",
                   "tfidf": "text only (TF-IDF word 1-2 grams)"}
# Words of one character count: "7" or "x" in an arithmetic step is as telling as a longer word
# (scikit-learn's default pattern keeps only words of two or more characters).
TOKEN_PATTERN = r"(?u)\b\w+\b"


def linear_probe(C: float = 1.0):
    """StandardScaler + L2 logistic regression, unfitted: the length baseline's probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, solver="liblinear", max_iter=1000))


def tfidf_probe(C: float = 1.0):
    """TF-IDF (word 1-2 grams) + L2 logistic regression, unfitted."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    return Pipeline([("tfidf", TfidfVectorizer(ngram_range=(1, 2), token_pattern=TOKEN_PATTERN)),
                     ("logreg", LogisticRegression(C=C, solver="liblinear", max_iter=1000))])


def length_features(texts, n_tokens) -> np.ndarray:
    """(n, 2) [characters, tokens] of each text."""
    return np.column_stack([[len(t) for t in texts], np.asarray(n_tokens, dtype=np.float64)]).astype(np.float64)


def cv_scores(features, pairs, fold, make_probe) -> np.ndarray:
    """(n_items,) out-of-fold `decision_function` scores: per outer fold, `make_probe()` fit on the other
    folds' items (a pair's first item labelled 1, its second 0) scores this fold's items."""
    x = features if isinstance(features, np.ndarray) else np.asarray(features, dtype=object)
    of_item = item_folds(pairs, fold, len(x))
    labels = np.full(len(x), -1)
    labels[pairs[:, 0]], labels[pairs[:, 1]] = 1, 0
    scores = np.zeros(len(x))
    for f in range(int(fold.max()) + 1):
        train, test = (of_item != f) & (of_item >= 0), of_item == f
        probe = make_probe().fit(_take(x, train), labels[train])
        scores[test] = probe.decision_function(_take(x, test))
    return scores


def _take(x, mask):
    return x[mask] if x.dtype != object else [str(t) for t in x[mask]]


def surface_baselines(texts, n_tokens, pairs, fold, C: float = 1.0) -> dict[str, dict]:
    """The length-only and TF-IDF baselines on the probes' pairs and outer folds.

    Args:
        texts: (n_items,) the arguments; n_tokens: each one's token count (its span in the arguer prompt).
        pairs: (n_pairs, 2) (correct, incorrect) item indices; fold: (n_pairs,) outer folds.
    Returns:
        {"length_only": {...}, "tfidf": {...}}, each `summarize`'s dict plus "features", what it reads.
    """
    texts = [str(t) for t in texts]
    length = cv_scores(length_features(texts, n_tokens), pairs, fold, lambda: linear_probe(C))
    words = cv_scores(texts, pairs, fold, lambda: tfidf_probe(C))
    return {"length_only": {**summarize(length, pairs, fold),
                            "features": "n_chars, n_tokens; StandardScaler + L2 LogisticRegression"},
            "tfidf": {**summarize(words, pairs, fold),
                      "features": "TfidfVectorizer(word 1-2 grams, 1-char words kept) + L2 LogisticRegression"}}


def probe_baselines(texts, n_tokens, labels, groups, folds: int = 5, C: float = 1.0) -> dict[str, dict]:
    """`surface_baselines` on items given as labels (1/0) and groups (one correct and one incorrect item
    each), with `folds` GroupKFold folds.

    Raises:
        ValueError: a group without exactly one item of each label.
        UserError: fewer groups than folds.
    """
    pairs = pairs_from_items(labels, groups)
    return surface_baselines(texts, n_tokens, pairs, pair_folds(np.asarray(groups)[pairs[:, 0]], folds), C)
