"""`data stats`: the base rate, order balance, histograms, token lengths."""

from __future__ import annotations

import json

import pytest

from cot_transplant.data.io import write_records
from cot_transplant.data.stats import dataset_stats, quantiles
from cot_transplant.data.synth import synthesize


def test_seed_base_rate_is_59_4_percent(seed_csv, cli):
    code, out, _ = cli("data", "stats", seed_csv, "--no-tokens")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{seed_csv}: 2748 rows, kind: full"
    assert lines[1] == "argument accuracy (base rate): 59.4% (1633 of 2748 arguments pick the correct candidate)"
    assert lines[2] == ("candidate order: correct answer shown second (swapped) in 51.0%; "
                        "the argument picks candidate_1 in 87.2%")


def test_json_output_and_error_histograms(tmp_path, cli):
    path = tmp_path / "s.jsonl"
    write_records(synthesize(200, 1, error_kind="arithmetic,unit-rate", error_step="last", short=True), path)
    code, out, _ = cli("data", "stats", path, "--no-tokens", "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["rows"] == 200 and stats["kind"] == "full"
    assert set(stats["histograms"]) == {"error_kind", "error_step", "n_steps"}
    assert set(stats["histograms"]["error_kind"]) == {"arithmetic", "unit-rate"}
    assert sum(stats["histograms"]["error_step"].values()) == 200
    assert stats["histograms"]["error_step"] == stats["histograms"]["n_steps"]  # the last step every time


def test_pairs_files_have_no_accuracy(tmp_path):
    records = synthesize(20, 1)
    for r in records:
        r.choice_answer = r.choice_argument = r.swapped = None
    stats = dataset_stats(records)
    assert stats["kind"] == "pairs" and "argument_accuracy" not in stats


def test_quantiles_by_nearest_rank():
    assert quantiles(list(range(1, 101))) == {"min": 1, "p50": 50, "p90": 90, "p99": 99, "max": 100, "mean": 50.5}


@pytest.mark.bundled
def test_token_lengths_under_the_bundled_tokenizer(seed_csv, cli):
    code, out, _ = cli("data", "stats", seed_csv, "--json")
    assert code == 0
    tokens = json.loads(out)["tokens"]
    assert set(tokens) == {"question", "correct_argument", "incorrect_argument", "choice_argument"}
    assert 10 < tokens["question"]["p50"] < tokens["question"]["max"] < 400
