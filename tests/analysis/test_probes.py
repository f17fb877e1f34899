"""Probes: per-layer rows for the figure and the HTML report, and `cot-transplant probe` end to end on a
tiny model (features kept on disk and reused). The statistics themselves: test_probe_cv.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cot_transplant.analysis.probe_features as probe_features
from cot_transplant.analysis.probe_baselines import BASELINES
from cot_transplant.analysis.probe_features import KINDS
from cot_transplant.analysis.probes import best_layers, paired, probe_layers
from cot_transplant.analysis.results import probe_section
from cot_transplant.cli import main


def planted(n_questions: int = 80, dim: int = 20, signal: float = 4.0, seed: int = 0):
    """Two items per question (correct 1, incorrect 0); features share a per-question offset (what a probe
    must not exploit) plus `signal` along one hidden direction for the correct item."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    question = np.repeat(rng.normal(size=(n_questions, dim)), 2, axis=0)  # (2n, dim)
    labels = np.tile([1, 0], n_questions)
    x = question + rng.normal(size=(2 * n_questions, dim)) + signal * np.outer(labels, direction)
    return x, labels, np.repeat(np.arange(n_questions), 2)


def test_probe_layers_reports_signal_where_planted_and_a_flipped_control():
    x, y, groups = planted()
    noise = np.random.default_rng(3).normal(size=x.shape)
    rows = probe_layers({"hidden_mean": np.stack([noise, x])}, y, groups, folds=4)["hidden_mean"]
    assert [r["layer"] for r in rows] == [0, 1]
    assert rows[1]["auroc"] > 0.9 and rows[1]["pairwise"] > 0.95 and len(rows[1]["fold_aurocs"]) == 4
    assert abs(rows[0]["auroc"] - 0.5) < 0.2 and abs(rows[0]["pairwise"] - 0.5) < 0.2
    assert abs(rows[1]["auroc_shuffled"] - 0.5) < 0.2
    best = best_layers({"hidden_mean": rows})["hidden_mean"]
    assert best["layer"] == 1 and best["auroc_shuffled"] == rows[1]["auroc_shuffled"]


def test_probe_layers_on_two_folds_and_bad_groups():
    x, y, groups = planted(n_questions=10)
    rows = probe_layers({"kv_mean": x[None]}, y, groups, folds=2)["kv_mean"]  # no inner CV needed
    assert len(rows) == 1 and len(rows[0]["fold_aurocs"]) == 2
    with pytest.raises(ValueError, match="one correct and one incorrect"):
        probe_layers({"kv_mean": x[None]}, np.ones_like(y), groups, folds=2)


def test_paired_drops_a_row_that_lost_an_argument():
    # rows 0..3 -> items 0..7; item 3 (row 1's incorrect argument) was too long and is not kept
    kept = np.array([0, 1, 2, 4, 5, 6, 7])
    pairs, rows = paired(kept, 4)
    assert rows.tolist() == [0, 2, 3]
    assert pairs.tolist() == [[0, 1], [3, 4], [5, 6]]  # positions in `kept`


def test_probe_command_on_a_tiny_model(tmp_path, capsys, monkeypatch):
    from cot_transplant.data.io import write_records
    from cot_transplant.data.synth import synthesize

    data = tmp_path / "rows.jsonl"
    write_records(synthesize(9, 0, short=True), data)
    out = tmp_path / "probe-original"  # as `cot-transplant results` finds it
    assert main(["probe", "--data", str(data), "--model", "tiny-llama", "--rows", "8", "--folds", "3",
                 "--permutations", "20", "--template", "chat", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "nested pairwise" in printed and "null 95th pct" in printed
    assert "baseline, layer 0 (embedding output" in printed and "text only (TF-IDF" in printed
    result = json.loads((out / "probe.json").read_text())
    assert result["n_pairs"] == 8 and result["n_items"] == 16 and result["config"]["permutations"] == 20
    assert result["_provenance"]["package"] == "cot-transplant" and result["features"]["cached"] is False
    # tiny-llama has 2 decoder layers: hidden states 0 (embeddings) .. 2, K/V of layers 0 and 1
    assert [r["layer"] for r in result["probes"]["hidden_mean"]] == [0, 1, 2]
    assert [r["layer"] for r in result["probes"]["kv_mean"]] == [0, 1]
    assert result["dims"] == {"hidden_mean": 32, "hidden_last": 32, "kv_mean": 32}  # k and v: 2 heads x 8 each
    for kind in KINDS:
        nested = result["nested"][kind]
        assert len(nested["layers_chosen"]) == 3 and len(nested["fold_aurocs"]) == 3 and len(nested["null"]) == 20
        assert 1 / 21 <= nested["p_value"] <= 1 and nested["pairwise_ci"][0] <= nested["pairwise"]
    assert set(result["baselines"]) == {"layer0", *BASELINES}
    assert result["baselines"]["layer0"]["pairwise"] == result["probes"]["hidden_mean"][0]["pairwise"]
    assert sorted(r for fold in result["fold_rows"] for r in fold) == list(range(8))
    assert (out / "probe.png").read_bytes().startswith(b"\x89PNG")
    stored = np.load(out / "features" / "hidden_mean.npy")
    assert stored.dtype == np.float16 and stored.shape == (3, 16, 32)
    block = probe_section(tmp_path, "original")  # docs/results.md's block, from the file alone
    assert block.startswith("8 rows (8 argument pairs, 8 distinct questions)") and "20 within-pair label flips" in block
    nested = result["nested"]["kv_mean"]
    low, high = nested["pairwise_ci"]
    folds = nested["pairwise_folds"]
    assert (f"| `kv_mean` | {100 * nested['pairwise']:.1f}% [{100 * low:.1f}%, {100 * high:.1f}%]; "
            f"{100 * np.mean(folds):.1f} ± {100 * np.std(folds, ddof=1):.1f} | "
            f"{nested['auroc']:.3f} ± {nested['auroc_sd']:.3f} | "
            f"{', '.join(str(x) for x in nested['layers_chosen'])} | {nested['p_value']:.3g} |") in block
    for label in ("layer 0 (embedding output", "length only (characters, tokens)", "text only (TF-IDF"):
        assert f"| baseline: {label}" in block
    # the HTML report's section leads with the same nested table (per-layer best comes after, marked optimistic)
    from cot_transplant.analysis.report_render import Table
    from cot_transplant.analysis.report_sections import probes_section

    tables = [b for b in probes_section([out / "probe.json"]).blocks if isinstance(b, Table)]
    assert tables[0].header[1].startswith("pairwise acc. (nested CV)")
    layers_chosen = block.split("| `kv_mean` | ")[1].split(" | ")[2]
    assert tables[0].rows[2][0] == "kv_mean" and tables[0].rows[2][3] == layers_chosen
    assert "optimistic" in tables[1].caption

    # another probe option, fewer rows: the stored states are read, no model is loaded
    monkeypatch.setattr("cot_transplant.models.load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert main(["probe", "--data", str(data), "--model", "tiny-llama", "--rows", "6", "--folds", "3",
                 "--permutations", "10", "--template", "chat", "--out", str(out)]) == 0
    again = json.loads((out / "probe.json").read_text())
    assert again["features"]["cached"] is True and again["n_pairs"] == 6
    assert len(again["nested"]["kv_mean"]["null"]) == 10
    # more rows than stored: computed afresh (here refused, the model is patched away)
    with pytest.raises(pytest.fail.Exception, match="model loaded"):
        main(["probe", "--data", str(data), "--model", "tiny-llama", "--rows", "9", "--folds", "3",
              "--template", "chat", "--out", str(out)])


def test_an_interrupted_extraction_resumes(tmp_path, monkeypatch):
    from cot_transplant.data.synth import synthesize

    records = synthesize(4, 0, short=True)
    key = {"data_sha256": "x", "model": "tiny-llama", "template": "chat"}
    calls = []
    real = probe_features.batch_features

    def flaky(model, encoded, pad_id, device):
        calls.append(len(encoded))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(model, encoded, pad_id, device)

    monkeypatch.setattr(probe_features, "FLUSH_S", -1.0)  # flush after every batch
    monkeypatch.setattr(probe_features, "batch_features", flaky)
    with pytest.raises(KeyboardInterrupt):
        probe_features.arguer_features(tmp_path, key, records, "tiny-llama", "chat", batch_size=2)
    assert json.loads((tmp_path / "meta.json").read_text())["done"] == 4
    calls.clear()
    monkeypatch.setattr(probe_features, "batch_features", real)
    features, kept, n_tokens, info = probe_features.arguer_features(tmp_path, key, records, "tiny-llama", "chat",
                                                                    batch_size=2)
    fresh, _, _, _ = probe_features.arguer_features(tmp_path / "fresh", key, records, "tiny-llama", "chat",
                                                    batch_size=2)
    assert info["cached"] is False and kept.tolist() == list(range(8)) and (n_tokens > 0).all()
    for kind in KINDS:
        np.testing.assert_array_equal(np.asarray(features[kind]), np.asarray(fresh[kind]))


def test_probe_errors_are_one_line(tmp_path, capsys):
    from cot_transplant.data.io import write_records
    from cot_transplant.data.synth import synthesize

    data = tmp_path / "rows.jsonl"
    write_records(synthesize(4, 0, short=True), data)
    for argv, message in ((["--rows", "2", "--folds", "3"], "only 2 questions"),
                          (["--folds", "2"], "nested cross-validation needs at least 3 folds"),
                          (["--data", str(tmp_path / "missing.csv")], "no such file")):
        args = ["probe", "--data", str(data), "--model", "tiny-llama", "--out", str(tmp_path / "p"), *argv]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()  # refused before any model or file
