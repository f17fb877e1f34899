"""A whole run on a tiny model: the run directory, eval from a checkpoint, the original split and CSV."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from cot_transplant.analysis.end_of_run import report_run
from cot_transplant.cli import main
from cot_transplant.config import load_config
from cot_transplant.data.splits import make_split
from cot_transplant.runs import rundir
from cot_transplant.runs.metrics import eval_metrics
from cot_transplant.runs.summary import summarize
from cot_transplant.train.loop import train
from cot_transplant.train.steps.settings import transplant_spec
from cot_transplant.transplant import TransplantSpec
from train_helpers import tiny_cfg

SEED_CSV = Path(__file__).resolve().parents[2].parent / "shared" / "seed-data" / "dataset.csv"
needs_seed = pytest.mark.skipif(not SEED_CSV.is_file(), reason="../shared/seed-data/dataset.csv not beside the repo")


@pytest.fixture
def run(tiny_rows, tmp_path):
    train(tiny_cfg(f"run.dir={tmp_path}", "run.name=r", "run.tensorboard=true"), report=report_run)
    return tmp_path / "r"


def test_run_directory_holds_every_listed_file(run):
    for name in ("config.yaml", "spec.json", "splits.json", "metrics.jsonl", "curves.png", "summary.json"):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))
    assert "_provenance" in (run / "config.yaml").read_text()
    splits = json.loads((run / "splits.json").read_text())
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == list(range(16))
    preds = sorted(p.name for p in (run / "predictions").iterdir())
    assert preds == ["test-0.csv", "test-4.csv", "test-8.csv", "val-0.csv", "val-4.csv", "val-8.csv"]
    with open(run / "predictions" / "test-8.csv") as f:
        assert next(csv.reader(f)) == ["row_id", "p_cand1", "p_cand2", "label", "argument_choice"]
    ckpt = rundir.latest_checkpoint(run)
    assert {p.name for p in ckpt.iterdir()} == {"adapter-arguer.safetensors", "adapter-chooser.safetensors",
                                              "arguer", "chooser", "optimizer.safetensors", "optimizer.json",
                                              "rng.safetensors", "state.json", "config.yaml", "spec.json"}
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {x["kind"] for x in lines} == {"train", "eval"} and all("samples" in x for x in lines)
    assert any("train/f_c" in x for x in lines) and any("test/auroc" in x for x in lines)


def test_run_and_each_checkpoint_carry_the_resolved_config_and_the_spec(tiny_rows, tmp_path):
    cfg = tiny_cfg(f"run.dir={tmp_path}", "run.name=r", "transplant.site=k", "transplant.layers=[1,0]",
                   "checkpoint.keep=5")
    train(cfg)
    run = tmp_path / "r"
    assert json.loads((run / "spec.json").read_text()) == {"site": "k", "layers": [0, 1]}
    assert TransplantSpec.from_dict(json.loads((run / "spec.json").read_text())) == transplant_spec(cfg)
    ckpts = sorted((run / "checkpoints").glob("step-*"))
    assert len(ckpts) == 2
    for ckpt in ckpts:
        assert (ckpt / "spec.json").read_text() == (run / "spec.json").read_text()
        assert (ckpt / "config.yaml").read_text() == (run / "config.yaml").read_text()
        values = yaml.safe_load((ckpt / "config.yaml").read_text())
        assert "_provenance" in values and load_config(base={k: v for k, v in values.items() if k != "_provenance"}) == cfg


def test_train_writes_the_summary_once_with_what_report_run_adds(tiny_rows, tmp_path, capsys, monkeypatch):
    import cot_transplant.runs.summary as summary_mod

    written, write = [], summary_mod.write_summary
    monkeypatch.setattr(summary_mod, "write_summary", lambda run, s: (written.append(run.name), write(run, s)))
    plain = train(tiny_cfg(f"run.dir={tmp_path}", "run.name=plain"))
    assert json.loads((tmp_path / "plain" / "summary.json").read_text()) == plain
    assert "baselines" not in plain and "curves" not in plain["outputs"] and not (tmp_path / "plain" / "curves.png").exists()
    reported = train(tiny_cfg(f"run.dir={tmp_path}", "run.name=r"), report=report_run)
    run = tmp_path / "r"
    assert written == ["plain", "r"]  # once per run, the report's additions included
    assert json.loads((run / "summary.json").read_text()) == reported
    assert reported["baselines"]["split"] == "test" and reported["outputs"]["curves"] == str(run / "curves.png")
    assert list(reported)[-1] == "baselines" and list(reported["outputs"])[-1] == "curves"  # the key order of old
    assert (run / "curves.png").is_file()
    assert "test f_c at the checkpoint chosen on validation" in capsys.readouterr().out


def test_summary_f_c_recomputes_from_the_chosen_predictions(run):
    summary = summarize(run)
    chosen = summary["test_at_chosen"]
    pred = rundir.read_predictions(run / "predictions" / f"test-{chosen['samples']}.csv")
    m = eval_metrics(pred["p_cand1"], pred["p_cand2"], pred["label"], pred["argument_choice"])
    assert m["f_c"] == chosen["f_c"]


def test_eval_reproduces_the_last_eval_from_the_checkpoint(run, capsys):
    assert main(["eval", str(run), "--split", "test"]) == 0
    result = json.loads(next(run.glob("eval-step-*.json")).read_text())[0]
    last = [x for x in rundir.read_metrics(run) if x.get("split") == "test"][-1]
    for key in ("test/f_c", "test/loss", "test/auroc", "test/o_c"):
        assert result[key] == pytest.approx(last[key], rel=1e-6, abs=1e-9), key


def test_resume_without_checkpoint_and_missing_run_are_one_line_errors(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err


@needs_seed
def test_original_split_selects_the_275_test_rows_at_64_percent():
    from cot_transplant.data.io import read_records

    records = read_records(SEED_CSV)
    splits = make_split("original", len(records), 0.1, 1, 1)
    test = [records[i] for i in splits["test"]]
    assert len(test) == 275
    assert round(100 * sum(r.argument_correct for r in test) / 275, 1) == 64.0
    assert not set(splits["test"]) & set(splits["train"] + splits["val"])


@needs_seed
def test_the_original_csv_trains_two_steps_on_a_tiny_model(tmp_path):
    cfg = tiny_cfg(f"data.path={SEED_CSV}", "data.split=original", "prompt.template=alpaca-json",
                   "train.max_samples=4", "train.accumulate_to=2", "eval.splits=[]", f"run.dir={tmp_path}",
                   "run.name=seed")
    summary = train(cfg)
    lines = rundir.read_metrics(tmp_path / "seed")
    steps = [x for x in lines if x["kind"] == "train"]
    assert len(steps) == 2 and all(x["train/loss"] is not None for x in steps)
    assert summary["samples_trained"] == 4


def test_eval_at_gives_the_listed_evaluation_points_and_the_end(tiny_rows, tmp_path):
    train(tiny_cfg(f"run.dir={tmp_path}", "run.name=r", "train.max_samples=16", "eval.at=[4,12]",
                   "eval.at_start=false"))
    preds = sorted(p.name for p in (tmp_path / "r" / "predictions").iterdir() if p.name.startswith("test-"))
    assert preds == ["test-12.csv", "test-16.csv", "test-4.csv"]


def test_eval_due_by_hand():
    from cot_transplant.train.loop import eval_due
    cfg = tiny_cfg("eval.at=[5,16]")
    assert [eval_due(cfg, b, b + 4, 0) for b in (0, 4, 8, 12, 16)] == [False, True, False, True, False]
    cfg = tiny_cfg("eval.every=8")
    assert not eval_due(cfg, 0, 4, 4) and eval_due(cfg, 4, 8, 8)
    with pytest.raises(Exception, match="eval.at"):
        tiny_cfg("eval.at=[16,5]")


def test_checkpoint_at_eval_keeps_one_checkpoint_per_evaluation(tiny_rows, tmp_path):
    train(tiny_cfg(f"run.dir={tmp_path}", "run.name=r", "train.max_samples=16", "eval.at=[4,12]",
                   "eval.at_start=false", "checkpoint.every=100", "checkpoint.at_eval=true", "checkpoint.keep=5"))
    kept = sorted(json.loads((p / "state.json").read_text())["cursor"]["samples"]
                  for p in (tmp_path / "r" / "checkpoints").glob("step-*"))
    assert kept == [4, 12, 16]
