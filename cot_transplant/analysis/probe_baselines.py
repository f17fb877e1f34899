"""What a probe of the arguer's states must beat: the same question answered from the argument's surface.

Scored on the probes' own items and folds (`probe_cv.cv_auroc` with the same `group_folds` pairs), so a
layer's AUROC and a baseline's differ only in the features:
  length_only  the argument's length, [characters, tokens] (the tokens of its exact span), through the
               probes' own standardized L2 logistic regression
  tfidf        the argument's text: TF-IDF of word 1- and 2-grams, then an L2 logistic regression, the
               vocabulary and weights fit inside each training fold (a scikit-learn Pipeline)
A layer that does no better than these reads no more than the text's length or its words.
"""

from __future__ import annotations

import numpy as np

from cot_transplant.analysis.probe_cv import cv_auroc, group_folds

BASELINES = ("length_only", "tfidf")
BASELINE_LABELS = {"length_only": "length only (characters, tokens)",
                   "tfidf": "text only (TF-IDF word 1-2 grams)"}
# Words of one character count: "7" or "x" in an arithmetic step is as telling as a longer word
# (scikit-learn's default pattern keeps only words of two or more characters).
TOKEN_PATTERN = r"(?u)\b\w+\b"


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


def probe_baselines(texts, n_tokens, labels, groups, folds: int | list = 5, C: float = 1.0) -> dict[str, dict]:
    """`cv_auroc` of the length-only and the TF-IDF baseline on `folds` (a count or `group_folds`' pairs).

    Args:
        texts: (n,) the arguments.
        n_tokens: (n,) each argument's token count (its span length in the arguer prompt).
        labels, groups: as for `cv_auroc`.
    Returns:
        {"length_only": {...}, "tfidf": {...}}, each `cv_auroc`'s dict plus "features", what it reads.
    """
    texts = [str(t) for t in texts]
    folds = group_folds(groups, folds) if isinstance(folds, (int, np.integer)) else folds
    length = cv_auroc(length_features(texts, n_tokens), labels, groups, folds, C)
    tfidf = cv_auroc(texts, labels, groups, folds, make_probe=lambda: tfidf_probe(C))
    return {"length_only": {**length, "features": "n_chars, n_tokens; StandardScaler + L2 LogisticRegression"},
            "tfidf": {**tfidf,
                      "features": "TfidfVectorizer(word 1-2 grams, 1-char words kept) + L2 LogisticRegression"}}
