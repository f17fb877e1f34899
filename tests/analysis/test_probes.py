"""Probes: a planted linear signal is found, shuffled labels give chance, folds keep a question together,
and `cot-transplant probe` runs end to end on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cot_transplant.analysis.probe_baselines import BASELINES
from cot_transplant.analysis.probes import KINDS, cv_auroc, group_folds, probe_layers
from cot_transplant.cli import main
from cot_transplant.errors import UserError


def planted(n_questions: int = 150, dim: int = 40, signal: float = 4.0, seed: int = 0):
    """Two items per question (correct 1, incorrect 0); features share a per-question offset (what a probe
    must not exploit) plus `signal` along one hidden direction for the correct item."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    question = np.repeat(rng.normal(size=(n_questions, dim)), 2, axis=0)  # (2n, dim)
    labels = np.tile([1, 0], n_questions)
    x = question + rng.normal(size=(2 * n_questions, dim)) + signal * np.outer(labels, direction)
    return x, labels, np.repeat(np.arange(n_questions), 2)


def test_probe_recovers_a_planted_direction():
    x, y, groups = planted()
    result = cv_auroc(x, y, groups, folds=5)
    assert result["auroc"] > 0.9 and result["auroc_pooled"] > 0.9
    assert len(result["fold_aurocs"]) == 5 and all(a > 0.8 for a in result["fold_aurocs"])


def test_probe_on_shuffled_labels_is_at_chance():
    x, y, groups = planted()
    shuffled = np.random.default_rng(1).permutation(y)
    assert abs(cv_auroc(x, shuffled, groups, folds=5)["auroc"] - 0.5) < 0.15
    x_noise = np.random.default_rng(2).normal(size=x.shape)  # and features that carry nothing
    assert abs(cv_auroc(x_noise, y, groups, folds=5)["auroc"] - 0.5) < 0.15


def test_probe_layers_reports_signal_where_planted_and_a_shuffled_control():
    x, y, groups = planted(n_questions=80)
    noise = np.random.default_rng(3).normal(size=x.shape)
    rows = probe_layers({"hidden_mean": np.stack([noise, x])}, y, groups, folds=4)["hidden_mean"]
    assert [r["layer"] for r in rows] == [0, 1]
    assert rows[1]["auroc"] > 0.9 and abs(rows[0]["auroc"] - 0.5) < 0.2
    assert abs(rows[1]["auroc_shuffled"] - 0.5) < 0.2


def test_folds_never_split_a_question():
    rng = np.random.default_rng(0)
    groups = np.repeat(rng.permutation(37), 2)  # the two answers of a question, questions in random order
    folds = group_folds(groups, 5)
    assert len(folds) == 5
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested) == list(range(len(groups)))  # every item tested exactly once
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        for g in set(groups[test]):  # both answers of a tested question are in this fold's test part
            assert (groups[test] == g).sum() == 2
    with pytest.raises(UserError, match="only 3 questions"):
        group_folds(np.repeat(np.arange(3), 2), 5)


def test_probe_command_on_a_tiny_model(tmp_path, capsys):
    from cot_transplant.data.io import write_records
    from cot_transplant.data.synth import synthesize

    data = tmp_path / "rows.jsonl"
    write_records(synthesize(8, 0, short=True), data)
    out = tmp_path / "probe"
    assert main(["probe", "--data", str(data), "--model", "tiny-llama", "--rows", "6", "--folds", "3",
                 "--template", "chat", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "best layer" in printed
    assert "baseline, length only (characters, tokens): AUROC" in printed and "text only (TF-IDF" in printed
    result = json.loads((out / "probe.json").read_text())
    assert result["n_questions"] == 6 and result["n_items"] == 12 and result["config"]["folds"] == 3
    assert set(result["probes"]) == set(KINDS) and result["_provenance"]["package"] == "cot-transplant"
    # tiny-llama has 2 decoder layers: hidden states 0 (embeddings) .. 2, K/V of layers 0 and 1
    assert [r["layer"] for r in result["probes"]["hidden_mean"]] == [0, 1, 2]
    assert [r["layer"] for r in result["probes"]["kv_mean"]] == [0, 1]
    assert result["dims"] == {"hidden_mean": 32, "hidden_last": 32, "kv_mean": 32}  # k and v: 2 heads x 8 each
    assert all(0 <= r["auroc"] <= 1 and len(r["fold_aurocs"]) == 3 for rows in result["probes"].values() for r in rows)
    # the baselines, on the probes' rows and folds: each fold's test questions are listed once
    assert set(result["baselines"]) == set(BASELINES)
    assert all(len(b["fold_aurocs"]) == 3 and (b["auroc"] is None or 0 <= b["auroc"] <= 1)
               for b in result["baselines"].values())
    assert sorted(q for fold in result["fold_questions"] for q in fold) == list(range(6))
    assert (out / "probe.png").read_bytes().startswith(b"\x89PNG")
    # too few rows for the folds: one line, exit 2, before any model is loaded
    assert main(["probe", "--data", str(data), "--model", "tiny-llama", "--rows", "2", "--folds", "3",
                 "--out", str(tmp_path / "p2")]) == 2
    assert "only 2 questions" in capsys.readouterr().err
